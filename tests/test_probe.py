"""reprlab.probe: the linear probe recovers a known linear rule, agrees with scikit-learn, is deterministic, leaves
the global RNG alone, rejects bad input by name, and probe_encoder leaves the encoder bit-identical."""
import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from reprlab.data import ImageDataset
from reprlab.encoders import create_encoder
from reprlab.evaluate import extract_features
from reprlab.probe import linear_probe, probe_encoder, probe_predict
from reprlab.testing import make_images


def linear_problem(n_train=2000, n_test=1000, d=16, c=4, margin=1.0, seed=0, distort=True):
    "Gaussian inputs labelled argmax(W x) with a margin between the top two logits, optionally stretched and shifted per dimension."
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(c, d, generator=g)
    x = torch.randn(20 * (n_train + n_test), d, generator=g)
    top2 = (x @ w.T).topk(2, dim=1).values
    x = x[top2[:, 0] - top2[:, 1] > margin][:n_train + n_test]
    assert len(x) == n_train + n_test
    y = (x @ w.T).argmax(1)
    if distort: x = x * torch.exp(2 * torch.randn(d, generator=g)) + 10 * torch.randn(d, generator=g)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


@pytest.fixture(scope="module")
def problem(): return linear_problem()


@pytest.fixture(scope="module")
def sgd(problem): return linear_probe(*problem)


def _standardise(x, ref):
    "x standardised with ref's population mean/std (the numpy reference)."
    ref = ref.double().numpy()
    return (x.double().numpy() - ref.mean(0)) / ref.std(0)


def test_sgd_recovers_the_rule(problem, sgd):
    tx, ty, qx, qy = problem
    assert sgd["accuracy"] >= 0.98
    assert float((sgd["pred"] == qy).float().mean()) == sgd["accuracy"]
    assert sgd["pred"].dtype == torch.int64 and sgd["probs"].shape == (1000, 4)
    torch.testing.assert_close(sgd["probs"].sum(1), torch.ones(1000))
    s = sgd["settings"]
    assert (s["method"], s["lr"], s["momentum"], s["weight_decay"], s["epochs"], s["steps"]) == ("sgd", 0.1, 0.9, 0.0, 100, 800)
    assert len(sgd["history"]) == 100 and sgd["history"][-1]["loss"] < sgd["history"][0]["loss"]
    assert sgd["history"][-1]["lr"] < 1e-5                                  # cosine schedule annealed to ~0


def test_standardisation_uses_train_statistics_only(problem, sgd):
    tx, ty, qx, qy = problem
    np.testing.assert_allclose(sgd["mean"].numpy(), tx.double().numpy().mean(0), rtol=1e-6)
    np.testing.assert_allclose(sgd["std"].numpy(), tx.double().numpy().std(0), rtol=1e-5)
    other = linear_probe(tx, ty, qx[:10] * 100 + 5, epochs=100)             # very different test features
    assert torch.equal(other["weight"], sgd["weight"]) and torch.equal(other["mean"], sgd["mean"])
    assert other["accuracy"] is None
    logits = torch.from_numpy(_standardise(qx, tx)).float() @ sgd["weight"].T + sgd["bias"]
    assert (logits.argmax(1) == sgd["pred"]).float().mean() > 0.999


def test_same_seed_same_bits_other_seed_still_accurate(problem, sgd):
    again = linear_probe(*problem)
    assert torch.equal(again["weight"], sgd["weight"]) and torch.equal(again["bias"], sgd["bias"])
    assert torch.equal(again["probs"], sgd["probs"])
    other = linear_probe(*problem, seed=7)
    assert not torch.equal(other["weight"], sgd["weight"])
    assert other["accuracy"] >= 0.98


def test_global_rng_untouched(problem):
    torch.manual_seed(123); np.random.seed(5)
    t_state, np_state = torch.get_rng_state(), np.random.get_state()
    linear_probe(*problem, epochs=5, val_fraction=0.1)
    linear_probe(*problem, method="logreg")
    assert torch.equal(torch.get_rng_state(), t_state)
    after = np.random.get_state()
    assert np.array_equal(after[1], np_state[1]) and after[2] == np_state[2]


def test_logreg_matches_scikit_learn(problem):
    tx, ty, qx, qy = problem
    r = linear_probe(tx, ty, qx, qy, method="logreg", C=0.5)
    assert r["accuracy"] >= 0.98 and r["history"][0]["converged"]
    ref = LogisticRegression(C=0.5, max_iter=1000).fit(_standardise(tx, tx), ty.numpy())
    np.testing.assert_allclose(r["probs"].numpy(), ref.predict_proba(_standardise(qx, tx)), atol=1e-4)
    assert (r["pred"].numpy() == ref.predict(_standardise(qx, tx))).mean() > 0.999
    assert r["settings"]["C"] == 0.5 and r["settings"]["solver"] == "lbfgs"


def test_logreg_binary_and_missing_classes():
    tx, ty, qx, qy = linear_problem(600, 300, d=8, c=2, distort=False)
    r = linear_probe(tx, ty, qx, qy, method="logreg", normalize=False, n_classes=3)
    ref = LogisticRegression(max_iter=1000).fit(tx.double().numpy(), ty.numpy())
    assert r["weight"].shape == (3, 8) and r["bias"][2] == -np.inf           # class 2 never seen: probability 0
    np.testing.assert_allclose(r["probs"][:, :2].numpy(), ref.predict_proba(qx.double().numpy()), atol=1e-4)
    assert (r["probs"][:, 2] == 0).all() and r["accuracy"] >= 0.98


def test_sgd_and_logreg_agree(problem, sgd):
    lr = linear_probe(*problem, method="logreg", C=100.0)
    assert (sgd["pred"] == lr["pred"]).float().mean() >= 0.98


def test_probe_predict_chunks_and_grad_mode(problem, sgd):
    tx, ty, qx, qy = problem
    p1, q1 = probe_predict(sgd, qx, chunk=13)
    assert torch.equal(p1, sgd["pred"]) and torch.allclose(q1, sgd["probs"])
    with torch.no_grad():                                                    # trains even when called under no_grad
        r = linear_probe(tx, ty, qx, qy, epochs=100)
    assert torch.equal(r["weight"], sgd["weight"])
    p0, q0 = probe_predict(sgd, qx[:0])
    assert p0.shape == (0,) and q0.shape == (0, 4)


def test_val_fraction(problem):
    tx, ty, qx, qy = problem
    r = linear_probe(tx, ty, qx, qy, epochs=20, val_fraction=0.25)
    s = r["settings"]
    assert (s["n_train"], s["n_val"]) == (1500, 500)
    assert [h["epoch"] for h in r["history"]] == list(range(20)) and "val_accuracy" in r["history"][0]
    assert r["val_accuracy"] >= 0.98 and r["history"][-1]["val_accuracy"] == r["val_accuracy"]
    full_mean = tx.double().mean(0).float()
    assert not torch.allclose(r["mean"], full_mean, rtol=0, atol=1e-6)       # statistics of the 1500 kept rows only


def test_normalisation_matters_and_divergence_is_reported(problem):
    raw = linear_probe(*problem, normalize=False, epochs=20)
    assert raw["mean"] is None and raw["accuracy"] < 0.9
    with pytest.raises(FloatingPointError, match="diverged"):
        linear_probe(*problem, normalize=False, lr=1e38, epochs=3)   # CE gradients are bounded: only absurd rates overflow


def test_constant_feature_is_centred_not_scaled():
    tx, ty, qx, qy = linear_problem(500, 200, d=6, c=3, distort=False)
    tx = torch.cat([tx, torch.full((500, 1), 3.0)], 1); qx = torch.cat([qx, torch.full((200, 1), 3.0)], 1)
    r = linear_probe(tx, ty, qx, qy, epochs=30)
    assert r["std"][-1] == 1 and torch.isfinite(r["weight"]).all() and r["accuracy"] >= 0.95


@pytest.mark.parametrize("kw, match", [
    (dict(train_x=torch.zeros(10)), "train_x must be a 2-D"),
    (dict(test_x=torch.zeros(5, 3)), "test_x has 3 features per row but train_x has 16"),
    (dict(train_y=torch.zeros(5, dtype=torch.long)), "train_y has 5 labels but train_x has 2000 rows"),
    (dict(test_y=torch.zeros(5, dtype=torch.long)), "test_y has 5 labels but test_x has 1000 rows"),
    (dict(train_x=torch.zeros(0, 16), train_y=torch.zeros(0, dtype=torch.long)), "train_x is empty"),
    (dict(train_y=torch.full((2000,), 2)), r"only one class \(2\)"),
    (dict(train_y="minus_one"), "-1 marks unlabelled"),
    (dict(n_classes=3), r"train_y labels must be in \[0, 3\)"),
    (dict(test_y="plus_four"), r"test_y labels must be in \[0, 4\)"),
    (dict(n_classes=1), "n_classes must be an int"),
    (dict(train_y="float"), "must hold integer class labels"),
    (dict(method="svm"), "method must be 'sgd' or 'logreg', got 'svm'"),
    (dict(epochs=0), "epochs must be an int"),
    (dict(batch_size=2.5), "batch_size must be an int"),
    (dict(lr=-0.1), "lr must be a number"),
    (dict(val_fraction=1.0), "val_fraction must be a number"),
    (dict(C=0), "C must be a number"),
    (dict(train_x="nan"), "the first is row 3"),
])
def test_bad_input_raises_valueerror(problem, kw, match):
    tx, ty, qx, qy = problem
    args = dict(train_x=tx, train_y=ty, test_x=qx, test_y=qy)
    special = {"minus_one": ty - 1, "plus_four": qy + 4, "float": ty.float()}
    for k, v in kw.items():
        if isinstance(v, str) and v in special: v = special[v]
        if k == "train_x" and v == "nan": v = tx.clone(); v[3, 0] = float("nan")
        args[k] = v
    with pytest.raises(ValueError, match=match): linear_probe(**args)


def test_one_class_after_val_split():
    x, y = torch.randn(10, 3), torch.tensor([0] * 9 + [1])
    with pytest.raises(ValueError, match="val_fraction"):
        for seed in range(20): linear_probe(x, y, x, val_fraction=0.1, seed=seed, epochs=1)


def colour_ds(n_per_class, seed):
    "Two classes of 16 px images told apart by their mean colour."
    imgs = np.concatenate([make_images(n_per_class, size=16, label=c, seed=seed) for c in (0, 1)])
    return ImageDataset(images=torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous(),
                        labels=np.repeat([0, 1], n_per_class), classes=["dark", "light"])


def _snapshot(m: nn.Module):
    "Bytes of every parameter and buffer, the train flag of every module, requires_grad of every parameter."
    tensors = {k: v.detach().clone() for k, v in [*m.named_parameters(), *m.named_buffers()]}
    return tensors, [x.training for x in m.modules()], [p.requires_grad for p in m.parameters()]


def _bit_identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k].reshape(-1).view(torch.uint8), b[k].reshape(-1).view(torch.uint8)) for k in a)


def test_probe_encoder_leaves_the_encoder_bit_identical():
    torch.manual_seed(0)
    enc = create_encoder("conv")
    enc.train()
    with torch.no_grad(): enc(torch.rand(8, 3, 16, 16))                    # BatchNorm running stats away from defaults
    bns = [m for m in enc.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and int(bns[0].num_batches_tracked) == 1
    bns[1].eval()                                                           # a mixed train/eval state
    enc.blocks[0][0].weight.requires_grad_(False)                           # and a frozen parameter
    before = _snapshot(enc)
    train, test = colour_ds(24, 0), colour_ds(12, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                      # no "restored" warning: nothing changed
        res = probe_encoder(enc, train, test, feature_batch_size=10, epochs=30)
    after = _snapshot(enc)
    assert _bit_identical(before[0], after[0])
    assert before[1] == after[1] and before[2] == after[2]
    assert res["accuracy"] >= 0.95 and res["settings"]["n_classes"] == 2
    # the probe saw exactly extract_features' output
    tx, ty = extract_features(enc, train); qx, qy = extract_features(enc, test)
    ref = linear_probe(tx, ty, qx, qy, epochs=30)
    assert torch.equal(ref["weight"], res["weight"]) and ref["accuracy"] == res["accuracy"]
    assert _bit_identical(before[0], _snapshot(enc)[0])


def test_probe_encoder_restores_state_written_during_embedding():
    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)
            self.register_buffer("calls", torch.zeros(()), persistent=False)
        def forward(self, x):
            self.calls += 1
            with torch.no_grad(): self.lin.bias.add_(1.0)                  # and scribbles on a parameter
            return self.lin(x.mean((2, 3)))
    m = Counting()
    before = _snapshot(m)
    with pytest.warns(UserWarning, match="restored"):
        probe_encoder(m, colour_ds(8, 0), colour_ds(4, 1), epochs=2, feature_batch_size=4)
    assert _bit_identical(before[0], _snapshot(m)[0]) and float(m.calls) == 0


def test_probe_encoder_unlabelled_test_set_and_empty_sets():
    unl = colour_ds(4, 1); unl.labels[:] = -1
    enc = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    r = probe_encoder(enc, colour_ds(8, 0), unl, epochs=2)
    assert r["accuracy"] is None and r["pred"].shape == (8,)
    empty = ImageDataset(images=torch.zeros(0, 3, 16, 16, dtype=torch.uint8), labels=[])
    with pytest.raises(ValueError, match="train_ds is empty"): probe_encoder(enc, empty, unl)
