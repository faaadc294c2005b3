# reprlab: `make demo` runs the main job on the embedded dataset; `make test` is what CI runs.
# Portable: python3 -m venv + pip, pinned by requirements.lock (torch/torchvision exact, see settings.ini).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.reprlab-dev
export OMP_NUM_THREADS ?= 2

.PHONY: setup demo test test-slow export check-export bench lock clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python setup.py settings.ini pyproject.toml requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[dev,onnx,saliency,cluster]"
	@touch $@

setup: $(STAMP)    ## create .venv and install reprlab (editable) with the dev extra

demo: $(STAMP)     ## data tour, then the main job (train the small conv classifier) on the embedded cifar10-wang-mini
	$(BIN)/python bin/s00-data.py
	$(BIN)/python bin/s01-train.py --name=demo-$$(date +%Y%m%d-%H%M%S)

check-export: $(STAMP)   ## nbs/ and lib/ agree: exporting the notebooks changes nothing, notebooks are clean
	@$(BIN)/python tools/check_export.py

test: check-export  ## export check, pytest (2 processes), notebooks
	$(BIN)/python -m pytest -q -n 2 --timeout=600
	OMP_NUM_THREADS=1 $(BIN)/nbdev-test --n-workers 2

test-slow: check-export  ## everything, including @pytest.mark.slow tests and #| slow notebook cells
	$(BIN)/python -m pytest -q -m "" --timeout=3600
	$(BIN)/nbdev-test --flags slow --n-workers 1

export: $(STAMP)   ## notebooks -> lib/, then strip notebook outputs and metadata, then README.md from nbs/index.ipynb
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean
	$(BIN)/python tools/make_readme.py

bench: $(STAMP)    ## every benchmark (installs the bench extra: fastai, lightning, lightly, smp, ...); each writes bench/results/NAME.json
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[dev,onnx,saliency,cluster,bench]"
	$(BIN)/python bench/data_throughput.py
	$(BIN)/python bench/trainer_overhead.py
	$(BIN)/python bench/encoder_throughput.py
	$(BIN)/python bench/ssl_vs_scratch.py
	$(BIN)/python bench/simclr_vs_lightly.py
	$(BIN)/python bench/corruptions_speed.py
	$(BIN)/python bench/explain_speed.py
	$(BIN)/python bench/unet_vs_smp.py
	$(BIN)/python bench/onnx_speed.py
	$(BIN)/python bench/seg_quality.py
	$(BIN)/python bench/knn_speed.py
	$(BIN)/python bench/saliency_fixations.py
	$(BIN)/python bench/hnet_vs_separate.py --budget 600
	$(BIN)/python bench/grid_overhead.py

lock: $(BIN)/python   ## refresh requirements.lock from a fresh resolution
	$(BIN)/python -m pip install --quiet -e ".[dev,onnx,saliency,cluster,bench]"
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^reprlab' > requirements.lock

clean:
	rm -rf $(VENV) build dist lib/*.egg-info
