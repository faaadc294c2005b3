"""reprlab.hypernet: SaliencyNet's cut table agrees with running the torchvision trunk by hand and its parameter counts
with closed formulas; the generated / shared bookkeeping survives HMNet wrapping; the hnet's generated tensors start at
PyTorch's measured default-init std (chunked or not); HMNet with a constant hnet reproduces the plain mnet exactly and
routes gradients to the hnet and the shared encoder only; catch-up freezing moves only the chosen embedding rows; the
multi-task provider's schedule, cycling and mid-epoch resume match a brute-force replay of the loaders; weight regression
fits two tasks' weights."""
from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from reprlab.checkpoint import create_model, load_model, save_checkpoint
from reprlab.data import ImageDataset
from reprlab.hypernet import (HMNet, HyperNetwork, MultitaskBatchProvider, SaliencyNet, SingleTaskProvider,
                              default_init_std, encoder_cuts, freeze_for_catchup, generated_names, generated_shapes,
                              generated_values, mark_generated, param_table, weight_regression_loss)
from reprlab.learner import Learner
from reprlab.loaders import DataLoaders, Loader
from reprlab.segmentation import n_parameters

SMALL = dict(encoder="conv", channels=(8, 16), strides=(1, 2), decoder=(8,))   # a tiny mnet for the fast tests


# ---------------------------------------------------------------- the main network
def test_cut_table_matches_torchvision_trunk():
    feats = torchvision.models.mobilenet_v2(weights=None).features.eval()
    x, want = torch.zeros(1, 3, 64, 64), []
    with torch.no_grad():
        for i, layer in enumerate(feats):
            x = layer(x)
            want.append((i + 1, x.shape[1], 64 // x.shape[-1]))
    assert encoder_cuts("mobilenet_v2") == want
    assert SaliencyNet().cut == 7 and SaliencyNet().reduction == 8      # default: the deepest cut at 1/8 resolution
    # a ConvEncoder's conv blocks are plain Sequentials: its trunk is conv, BN, ReLU, conv, BN, ReLU
    assert encoder_cuts("conv", channels=(8, 16), strides=(1, 2)) == [(1, 8, 1), (2, 8, 1), (3, 8, 1), (4, 16, 2), (5, 16, 2), (6, 16, 2)]


def test_parameter_counts_match_formulas():
    net = SaliencyNet()
    ref = torchvision.models.mobilenet_v2(weights=None).features[:7]
    shared = sum(p.numel() for p in ref.parameters())
    gen = (9 * 32 * 64 + 64) + (9 * 64 * 32 + 32) + (32 * 1 + 1)
    rows = param_table(net)
    assert sum(n for *_, n, r in rows if r == "shared") == shared == 55_488
    assert sum(n for *_, n, r in rows if r == "generated") == gen == 36_993
    assert n_parameters(net) == shared + gen
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.decoder.modules())


@pytest.mark.parametrize("size", [(96, 128), (37, 53), (8, 8), (200, 17)])
def test_any_input_size(size):
    net = SaliencyNet(cut=4, decoder=(16, 8, 8)).eval()
    assert net(torch.rand(2, 3, *size)).shape == (2, 1, *size)


def test_other_encoders_and_channels():
    net = SaliencyNet(in_chans=1, **SMALL)
    assert net(torch.rand(3, 1, 20, 30)).shape == (3, 1, 20, 30)
    net = SaliencyNet("resnet18", cut=5, decoder=(16,))
    assert net.enc_channels == 64 and net.reduction == 4
    assert net(torch.rand(1, 3, 33, 47)).shape == (1, 1, 33, 47)


@pytest.mark.parametrize("cut", [0, 20, True, 2.5, "7"])
def test_bad_cut(cut):
    with pytest.raises(ValueError, match=r"cut must be an integer in \[1, 19\].*encoder_cuts"):
        SaliencyNet(cut=cut)


def test_bad_arguments():
    with pytest.raises(ValueError, match="registered encoder name"): SaliencyNet(nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="decoder must be"): SaliencyNet(decoder=(64, 0))
    with pytest.raises(ValueError, match=r"x must be a \(B, 3, H, W\)"): SaliencyNet(**SMALL)(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="match no parameter"): SaliencyNet(generated=("head",), **SMALL)


def test_checkpoint_rebuilds_registered_model(tmp_path):
    torch.manual_seed(0)
    net = create_model("saliency_net", cut=5, decoder=(16,), generated=("decoder.0",))
    save_checkpoint(dict(model=net.state_dict(), model_spec=net.spec), tmp_path / "m.pt")
    back = load_model(tmp_path / "m.pt")
    x = torch.rand(2, 3, 40, 56)
    assert torch.equal(back(x), net.eval()(x))
    assert generated_names(back) == ["decoder.0.weight", "decoder.0.bias"]


# ---------------------------------------------------------------- generated / shared bookkeeping
def test_mark_generated_patterns():
    net = SaliencyNet(generated=(), **SMALL)
    assert generated_names(net) == []
    assert mark_generated(net, "decoder.*.weight") == ["decoder.0.weight", "decoder.2.weight"]
    assert mark_generated(net, ["decoder.2", "encoder.0.weight"]) == ["encoder.0.weight", "decoder.2.weight", "decoder.2.bias"]
    rows = param_table(net)
    assert [r[0] for r in rows] == [n for n, _ in net.named_parameters()]
    assert all((r[3] == "generated") == (r[0] in generated_names(net)) for r in rows)
    assert all(r[2] == torch.Size(r[1]).numel() for r in rows)


def test_bookkeeping_survives_wrapping():
    net = SaliencyNet(**SMALL)
    rows, vals, sd_keys = param_table(net), generated_values(net), list(net.state_dict())
    hm = HMNet(net, HyperNetwork(generated_shapes(net), 2))
    assert param_table(hm) == param_table(net) == rows
    assert all(torch.equal(vals[n], v) for n, v in generated_values(hm).items())
    assert sorted(net.state_dict()) == sorted(sd_keys)                    # placeholders keep their keys
    assert not any(n in dict(net.named_parameters()) for n in generated_names(net))
    with pytest.raises(ValueError, match="already inside an HMNet"): mark_generated(net, "decoder")
    plain = SaliencyNet(generated=(), **SMALL)
    plain.load_state_dict(net.state_dict())                             # a wrapped mnet's weights load into a plain one


# ---------------------------------------------------------------- the hypernetwork's initialisation
def test_default_init_std_is_pytorchs():
    torch.manual_seed(0)
    for layer in (nn.Conv2d(32, 64, 3), nn.Linear(300, 1000), nn.Conv2d(8, 600, 5, groups=2)):
        shapes = {"m.weight": tuple(layer.weight.shape), "m.bias": tuple(layer.bias.shape)}
        std = default_init_std(shapes)
        assert std["m.weight"] == pytest.approx(layer.weight.std().item(), rel=0.05)
        assert std["m.bias"] == pytest.approx(layer.bias.std().item(), rel=0.1)
    with pytest.raises(ValueError, match="init_std"): default_init_std({"norm.weight": (8,)})


@pytest.mark.parametrize("chunk_size", [None, 1000, 4096])
def test_generated_weights_start_at_default_init_scale(chunk_size):
    ref = generated_values(SaliencyNet())                                                # torch's own default init
    shapes = {n: tuple(v.shape) for n, v in ref.items()}
    target = default_init_std(shapes)
    for n, v in ref.items():
        if v.numel() >= 1000: assert v.std().item() == pytest.approx(target[n], rel=0.03)
    for seed in range(3):
        torch.manual_seed(seed)
        hn = HyperNetwork(shapes, n_tasks=8, chunk_size=chunk_size)
        ratios = {n: [] for n in shapes if ref[n].numel() >= 32}
        for task in torch.randint(0, 8, (4,)).tolist():
            with torch.no_grad(): w = hn.split(hn(task))
            for n, r in ratios.items():
                s, k = target[n], w[n].numel()
                r.append(w[n].std().item() / s)
                assert abs(r[-1] - 1) < (0.1 if k >= 1000 else 0.4), (n, seed, task, r[-1])   # small tensors: sampling noise
                assert abs(w[n].mean().item()) < 0.1 * s + 4 * s / k ** 0.5, (n, seed, task)
            assert abs(w["decoder.4.bias"].item()) < 4 * target["decoder.4.bias"]
        for n, r in ratios.items(): assert abs(sum(r) / len(r) - 1) < 0.3, (n, seed, r)


def test_hnet_sizes_split_and_task_ids():
    shapes = {"a.weight": (5, 3, 3, 3), "a.bias": (5,), "b.weight": (2, 5)}
    P = 5 * 27 + 5 + 10
    hn = HyperNetwork(shapes, n_tasks=3, emb_dim=4, hidden=(7,), chunk_size=16, chunk_emb_dim=2)
    assert hn.n_params == P and hn.n_chunks == 10 and hn(0).shape == (P,)
    assert n_parameters(hn) == 3 * 4 + 10 * 2 + (6 * 7 + 7) + (7 * 16 + 16)
    flat = torch.arange(P, dtype=torch.float32)
    parts = hn.split(flat)
    assert {n: tuple(t.shape) for n, t in parts.items()} == shapes
    assert torch.equal(torch.cat([t.flatten() for t in parts.values()]), flat)
    assert torch.equal(hn(torch.tensor(2)), hn(2)) and torch.equal(hn(torch.tensor([1])), hn(1))
    unchunked = HyperNetwork(shapes, n_tasks=3, emb_dim=4, hidden=(7,))
    assert n_parameters(unchunked) == 3 * 4 + (4 * 7 + 7) + (7 * P + P)
    for bad in (3, -1, 1.0, torch.tensor([0, 1])):
        with pytest.raises(ValueError, match="task"): hn(bad)
    with pytest.raises(ValueError, match=r"flat must be a \(150,\) tensor"): hn.split(flat[:-1])
    with pytest.raises(ValueError, match="chunk_size"): HyperNetwork(shapes, 1, chunk_size=0)
    with pytest.raises(ValueError, match="target_shapes"): HyperNetwork({}, 1)


def test_add_tasks_keeps_old_tasks():
    torch.manual_seed(0)
    hn = HyperNetwork({"l.weight": (50, 40), "l.bias": (50,)}, n_tasks=2, chunk_size=300)
    before = [hn(t).detach() for t in range(2)]
    assert hn.add_tasks(3) == [2, 3, 4] and hn.n_tasks == 5 and hn.task_embeddings.shape == (5, 8)
    assert all(torch.equal(hn(t), b) for t, b in enumerate(before))
    assert not torch.equal(hn(3), hn(4))
    assert isinstance(hn.task_embeddings, nn.Parameter) and hn.task_embeddings.requires_grad


# ---------------------------------------------------------------- HMNet
class ConstantHnet(HyperNetwork):
    "A HyperNetwork whose output is fixed: the given flat vector, whatever the task."
    def __init__(self, shapes, flat):
        super().__init__(shapes, n_tasks=2)
        self.flat = flat
    def forward(self, task): return self.flat


@pytest.mark.parametrize("train", [False, True])
def test_constant_hnet_reproduces_plain_mnet(train):
    torch.manual_seed(0)
    plain = SaliencyNet(cut=5)
    own = torch.cat([v.flatten() for v in generated_values(plain).values()])
    hm = HMNet(copy.deepcopy(plain), ConstantHnet(generated_shapes(plain), own))
    plain.train(train); hm.train(train)
    x = torch.rand(3, 3, 48, 64)
    assert torch.allclose(hm(x, 1), plain(x), atol=1e-6)
    assert torch.allclose(hm(x, torch.tensor([0, 0, 0])), plain(x), atol=1e-6)
    if train:                                             # BatchNorm statistics of the shared encoder update as usual
        assert torch.allclose(plain.encoder[0][1].running_mean, hm.mnet.encoder[0][1].running_mean)


def test_gradients_reach_hnet_and_shared_encoder_only():
    torch.manual_seed(0)
    hm = HMNet(SaliencyNet(**SMALL), HyperNetwork(generated_shapes(SaliencyNet(**SMALL)), 3, chunk_size=64))
    placeholders = [hm.mnet.get_buffer(n) for n in generated_names(hm)]
    assert not any(any(p is q for q in hm.parameters()) for p in placeholders)
    F.mse_loss(hm(torch.rand(2, 3, 16, 16), 1), torch.rand(2, 1, 16, 16)).backward()
    for n, p in hm.named_parameters():
        assert p.grad is not None and (p.grad.abs().sum() > 0 or n.startswith("mnet.encoder")), n
    assert hm.hnet.task_embeddings.grad[[0, 2]].abs().sum() == 0 and hm.hnet.task_embeddings.grad[1].abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in placeholders)
    assert sum(p.grad.abs().sum() for p in hm.mnet.encoder.parameters()) > 0


def test_hmnet_task_checks_and_counts():
    net = SaliencyNet(**SMALL)
    hm = HMNet(net, HyperNetwork(generated_shapes(net), 3, chunk_size=32))
    x = torch.rand(4, 3, 12, 12)
    with pytest.raises(ValueError, match=r"a batch is one task.*ids \[0, 2\]"): hm(x, torch.tensor([0, 2, 2, 0]))
    with pytest.raises(ValueError, match=r"task id in \[0, 3\)"): hm(x, 3)
    with pytest.raises(ValueError, match="shape"): hm(x, torch.tensor([1, 1]))
    assert torch.equal(hm(x, torch.tensor([2, 2, 2, 2])), hm(x, 2))
    c = hm.n_parameters()
    assert c["generated"] == sum(n for *_, n, r in param_table(hm) if r == "generated")
    assert c["total"] == n_parameters(hm) and c["mnet"] == n_parameters(SaliencyNet(**SMALL))
    with pytest.raises(ValueError, match="no generated parameters"): HMNet(SaliencyNet(generated=(), **SMALL), hm.hnet)
    with pytest.raises(ValueError, match="do not match"):
        HMNet(SaliencyNet(**{**SMALL, "decoder": (4,)}), HyperNetwork(generated_shapes(net), 1))


def test_catchup_moves_only_chosen_embedding_rows():
    torch.manual_seed(0)
    net = SaliencyNet(**SMALL)
    hm = HMNet(net, HyperNetwork(generated_shapes(net), 3, chunk_size=32)).train()
    before = {k: v.clone() for k, v in hm.state_dict().items()}
    assert freeze_for_catchup(hm, tasks=[1]) == ["hnet.task_embeddings"]
    bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    hm.train()
    assert not bn.training                                  # frozen BatchNorm stays in eval mode
    opt = torch.optim.Adam([p for p in hm.parameters() if p.requires_grad], lr=0.1)
    for t in (1, 2, 0, 1):                                               # batches of other tasks must not move their rows
        F.mse_loss(hm(torch.rand(2, 3, 16, 16), t), torch.rand(2, 1, 16, 16)).backward(); opt.step(); opt.zero_grad()
    after = hm.state_dict()
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert changed == ["hnet.task_embeddings"]
    rows = (after["hnet.task_embeddings"] != before["hnet.task_embeddings"]).any(1).tolist()
    assert rows == [False, True, False]
    names = hm.trainable("all")
    assert names == [n for n, _ in hm.named_parameters()] and hm.train() is hm and bn.training
    F.mse_loss(hm(torch.rand(2, 3, 16, 16), 0), torch.rand(2, 1, 16, 16)).backward()
    assert hm.hnet.task_embeddings.grad[0].abs().sum() > 0                 # every row trains again


def test_catchup_freezing_survives_deepcopy():
    net = SaliencyNet(**SMALL)
    hm = HMNet(net, HyperNetwork(generated_shapes(net), 3, chunk_size=32))
    freeze_for_catchup(hm, tasks=2)
    c = copy.deepcopy(hm)                                                   # e.g. few-shot adaptation on a copy
    for t in range(3): c(torch.rand(2, 3, 8, 8), t).sum().backward()
    assert c.hnet.task_embeddings.grad.abs().sum(1).ne(0).tolist() == [False, False, True]
    assert [n for n, p in c.named_parameters() if p.requires_grad] == ["hnet.task_embeddings"]
    c.trainable("all")
    assert hm.hnet.trainable_rows == {2} and c.hnet.trainable_rows is None   # the original is untouched


# ---------------------------------------------------------------- providers
def noisy(x, gen):
    "A seeded augmentation: the loader draws it from (seed, epoch, batch)."
    return x + 0.01 * torch.rand(x.shape, generator=gen)


def toy_loader(n, seed, bs=2, size=(6, 6), shuffle=True, masks=True):
    g = torch.Generator().manual_seed(seed)
    ds = ImageDataset(images=torch.randint(0, 256, (n, 3, *size), dtype=torch.uint8, generator=g),
                      masks=torch.randint(0, 256, (n, 1, *size), dtype=torch.uint8, generator=g) if masks else None)
    return Loader(ds, batch_size=bs, shuffle=shuffle, seed=seed, transform=noisy, device="cpu")


def loader_stream(ld, n):
    "The first `n` batches of a loader's epochs 0, 1, ... in order: the brute-force reference."
    out = []
    for e in itertools.count():
        ld.set_epoch(e)
        out += list(ld)
        if len(out) >= n: return out[:n]


def test_schedule_counts_and_blocks():
    prov = MultitaskBatchProvider([toy_loader(4, s) for s in range(3)], batches_per_task=6, consecutive_batches_per_task=3, seed=5)
    scheds = [prov.schedule(e) for e in range(4)]
    for s in scheds:
        assert len(s) == len(prov) == 18
        for k in range(3): assert [j for kk, j in s if kk == k] == list(range(6))    # each task's batches in order
        runs = [len(list(g)) for _, g in itertools.groupby(k for k, _ in s)]
        assert all(r % 3 == 0 for r in runs)                                      # blocks of 3 consecutive batches
    assert len({tuple(s) for s in scheds}) == 4                                   # shuffled anew each epoch
    assert MultitaskBatchProvider(prov.loaders, 6, 3, seed=5).schedule(2) == scheds[2]
    odd = MultitaskBatchProvider(prov.loaders, 5, 2).schedule(0)                 # blocks of 2, 2 and 1 batches per task
    assert len(odd) == 15 and all([j for kk, j in odd if kk == k] == list(range(5)) for k in range(3))


def test_cycling_matches_loader_epochs():
    loaders = [toy_loader(6, 1), toy_loader(10, 2), toy_loader(2, 3)]           # 3, 5 and 1 batches per loader epoch
    prov = MultitaskBatchProvider(loaders, batches_per_task=4, consecutive_batches_per_task=2, seed=0)
    got = {k: [] for k in range(3)}
    for e in range(3):
        prov.set_epoch(e)
        for b in prov: got[b["task"]].append(b)
    for k, ld in enumerate([toy_loader(6, 1), toy_loader(10, 2), toy_loader(2, 3)]):
        ref = loader_stream(ld, 12)
        assert len(got[k]) == 12
        for a, r in zip(got[k], ref):
            assert torch.equal(a["index"], r["index"]) and torch.equal(a["image"], r["image"])
            assert torch.equal(a["map"], r["mask"].float() / 255)


@pytest.mark.parametrize("start", [0, 1, 5, 11, 12])
def test_resume_mid_epoch_is_exact(start):
    make = lambda: MultitaskBatchProvider([toy_loader(6, 1), toy_loader(10, 2), toy_loader(2, 3)], 4, 2, seed=3)
    prov = make()
    prov.set_epoch(2)
    full = list(prov)
    assert prov.epoch == 3 and prov.start_batch == 0
    fresh = make()                                                                 # a new process: nothing carried over
    fresh.set_epoch(2, start)
    rest = list(fresh)
    assert len(rest) == 12 - start
    for a, b in zip(full[start:], rest):
        assert a["task"] == b["task"] and torch.equal(a["index"], b["index"])
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["map"], b["map"])


def test_single_task_provider_is_the_loader():
    prov = SingleTaskProvider(toy_loader(7, 4), task_id=5)
    assert len(prov) == 4
    ref = loader_stream(toy_loader(7, 4), 8)
    got = []
    for e in range(2):
        prov.set_epoch(e); got += list(prov)
    assert all(b["task"] == 5 for b in got)
    assert all(torch.equal(a["index"], r["index"]) and torch.equal(a["image"], r["image"]) for a, r in zip(got, ref))
    few = SingleTaskProvider(toy_loader(3, 4, bs=3), task_id=0, batches_per_epoch=4)   # a few-shot set cycled
    few.set_epoch(1)
    assert len(list(few)) == 4 and few.source(0, 1, 2) == (6, 0)


def test_map_conversion_and_bad_input():
    from reprlab.hypernet import _as_map
    m = torch.tensor([0, 51, 255], dtype=torch.uint8)
    assert torch.equal(_as_map(m), torch.tensor([0.0, 0.2, 1.0]))
    assert torch.equal(_as_map(torch.tensor([True, False])), torch.tensor([1.0, 0.0]))
    f = torch.rand(3)
    assert _as_map(f) is f
    with pytest.raises(ValueError, match="dtype torch.int64"): _as_map(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="no 'mask'"): list(SingleTaskProvider(toy_loader(4, 0, masks=False), 2))
    ld = toy_loader(4, 0)
    with pytest.raises(ValueError, match=r"loaders\[1\] repeat"): MultitaskBatchProvider([ld, ld], 2)
    with pytest.raises(ValueError, match="consecutive_batches_per_task must be in"): MultitaskBatchProvider([ld], 2, 3)
    with pytest.raises(ValueError, match="batches_per_task must be an integer"): MultitaskBatchProvider([ld], 0)
    with pytest.raises(ValueError, match="task_ids must be 1 distinct"): MultitaskBatchProvider([ld], 2, task_ids=[1, 2])
    with pytest.raises(ValueError, match=r"start_batch must be in \[0, 2\]"): MultitaskBatchProvider([ld], 2).set_epoch(0, 3)
    with pytest.raises(ValueError, match="non-empty list"): MultitaskBatchProvider([], 2)


class DictModel(nn.Module):
    "An HMNet trained by the Learner from provider batches: `forward(batch) -> dict(loss, logits)`."
    def __init__(self, hm): super().__init__(); self.hm = hm
    def forward(self, batch):
        logits = self.hm(batch["image"], batch["task"])
        return dict(logits=logits, loss=F.binary_cross_entropy_with_logits(logits, batch["map"]))


def test_learner_trains_from_provider():
    torch.manual_seed(0)
    net = SaliencyNet(**SMALL)
    model = DictModel(HMNet(net, HyperNetwork(generated_shapes(net), 2, chunk_size=64)))
    prov = MultitaskBatchProvider([toy_loader(8, 1, bs=4), toy_loader(8, 2, bs=4)], batches_per_task=3)
    learn = Learner(model, DataLoaders(prov), lr=1e-2, device="cpu")
    learn.fit(3)
    losses = [h["train_loss"] for h in learn.history]
    assert len(losses) == 3 and losses[-1] < losses[0], losses


# ---------------------------------------------------------------- weight regression
def test_weight_regression_fits_two_tasks():
    torch.manual_seed(0)
    net = SaliencyNet(cut=1, decoder=(4,))                     # a tiny target: 2 convs of the decoder (1 x 4 x ... )
    shapes = generated_shapes(net)
    targets = {}
    for t in range(2):
        m = SaliencyNet(cut=1, decoder=(4,))
        targets[t] = m.state_dict()                          # a separately "trained" mnet's state: extra keys ignored
    hn = HyperNetwork(shapes, n_tasks=2, hidden=(32,))
    first = weight_regression_loss(hn, targets).item()
    opt = torch.optim.Adam(hn.parameters(), lr=1e-2)
    for _ in range(300):
        loss = weight_regression_loss(hn, targets, scaled=True); opt.zero_grad(); loss.backward(); opt.step()
    assert loss.item() < 1e-3
    final = weight_regression_loss(hn, targets).item()
    assert final < 1e-3 * first, (first, final)
    hm = HMNet(net, hn)
    for t in range(2):
        w = hm.weights(t)
        assert all(torch.allclose(w[n], targets[t][n], atol=0.05 * default_init_std(shapes)[n] + 1e-4) for n in shapes)
    with pytest.raises(ValueError, match="lacks generated parameter"):
        weight_regression_loss(hn, {0: {"decoder.0.weight": targets[0]["decoder.0.weight"]}})
    assert weight_regression_loss(hm, targets).item() == pytest.approx(final)


def test_skip_layer_feeds_the_decoder_block_at_its_resolution():
    "skip_layer=4 (mobilenet_v2: 24 channels at 1/4) joins the second decoder conv; the output depends on those features."
    torch.manual_seed(0)
    m = SaliencyNet(generated=(), skip_layer=4).eval()
    assert (m.join, m.decoder[2].in_channels, m.decoder[0].in_channels) == (1, 64 + 24, 32)
    assert n_parameters(m) - n_parameters(SaliencyNet(generated=())) == 3 * 3 * 24 * 32     # only the joined conv grows
    x = torch.randn(2, 3, 90, 122)                                                           # sizes that do not divide
    assert m(x).shape == (2, 1, 90, 122)
    feats = {}
    h = m.encoder[3].register_forward_hook(lambda mod, i, o: feats.setdefault("skip", o))
    with torch.no_grad(): y = m(x)
    h.remove()
    with torch.no_grad():                                                                    # the same forward by hand
        z = m.encoder(x)
        assert (z.shape[-2:], feats["skip"].shape[-2:]) == ((12, 16), (23, 31))
        z = F.interpolate(F.relu(m.decoder[0](z)), size=(24, 32), mode="bilinear", align_corners=False)
        s = F.interpolate(feats["skip"], size=(24, 32), mode="bilinear", align_corners=False)
        z = F.relu(m.decoder[2](torch.cat([z, s], 1)))
        z = m.decoder[4](F.interpolate(z, size=(48, 64), mode="bilinear", align_corners=False))
        z = F.interpolate(z, size=(90, 122), mode="bilinear", align_corners=False)
    assert torch.allclose(y, z, atol=1e-5)
    with pytest.raises(ValueError, match="skip_layer must be 0"): SaliencyNet(skip_layer=7)
    with pytest.raises(ValueError, match="times finer than the cut"): SaliencyNet(skip_layer=5)
    hm = create_model("saliency_hnet", tasks=["a", "b"], skip_layer=4)
    assert hm.net.mnet.skip_layer == 4 and hm(x, "b").shape == (2, 1, 90, 122)
