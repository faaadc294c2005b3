#!/usr/bin/env python
"""Run a pipeline of stages from one JSON file (pretrain -> fine-tune -> evaluate -> explain -> export), each stage an
ordinary run under runs/<name>/<stage>/ whose output feeds the next by path. Running it again skips finished stages,
reruns a stage whose options changed (and the ones after it) and resumes an interrupted one exactly.

    python bin/s05-pipeline.py --pipeline=examples/pipeline.json [--name=NAME] [--skip=explain] [--dry_run]
    python bin/s05-pipeline.py --pipeline=examples/pipeline.json --finetune.lr=0.01     (any stage's option)

The same as `reprlab-pipeline` or `python -m reprlab pipeline` (reprlab.pipeline.pipeline_main).
"""
import sys

from reprlab.pipeline import pipeline_main

if __name__ == "__main__":
    sys.exit(pipeline_main())
