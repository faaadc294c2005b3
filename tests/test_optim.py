"""Optimisers by name, parameter groups (no decay on norms / biases, per-prefix lr), LARS against hand computations."""
import io

import pytest
import torch
from torch import nn

from reprlab.optim import LARS, create_optimizer, opt_func, param_groups


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1, bias=False),
                                     nn.GroupNorm(2, 4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.neck = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6))
        self.head = nn.Linear(6, 2)

    def forward(self, x): return self.head(self.neck(self.encoder(x)))


def _names(model, group):
    ids = {id(p): n for n, p in model.named_parameters()}
    return sorted(ids[id(p)] for p in group["params"])


def test_no_decay_on_biases_and_norms():
    net = Net()
    gs = {g["name"]: g for g in param_groups(net, 0.05)}
    assert _names(net, gs["decay"]) == ["encoder.0.weight", "encoder.3.weight", "head.weight", "neck.0.weight"]
    assert _names(net, gs["no_decay"]) == ["encoder.0.bias", "encoder.1.bias", "encoder.1.weight", "encoder.4.bias",
                                           "encoder.4.weight", "head.bias", "neck.0.bias", "neck.1.bias", "neck.1.weight"]
    assert gs["decay"]["weight_decay"] == 0.05 and gs["no_decay"]["weight_decay"] == 0.0
    assert gs["decay"]["weight_decay_mult"] == 1.0 and gs["no_decay"]["weight_decay_mult"] == 0.0


def test_norm_layer_params_without_1d_shape_are_not_decayed():
    # a norm over a 2-D shape has 2-D weights: excluded because it is a norm layer, not because of its shape
    m = nn.Sequential(nn.Linear(3, 6), nn.Unflatten(1, (2, 3)), nn.LayerNorm((2, 3)))
    gs = {g["name"]: g for g in param_groups(m, 0.1)}
    assert _names(m, gs["no_decay"]) == ["0.bias", "2.bias", "2.weight"]
    assert _names(m, gs["decay"]) == ["0.weight"]


def test_no_decay_names_and_switch_off():
    class Tok(nn.Module):
        def __init__(self):
            super().__init__(); self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8)); self.proj = nn.Linear(8, 8)
    m = Tok()
    gs = {g["name"]: g for g in param_groups(m, 0.1, no_decay_names=["pos_embed"])}
    assert _names(m, gs["no_decay"]) == ["pos_embed", "proj.bias"]
    assert [g["name"] for g in param_groups(m, 0.1, no_decay_1d=False)] == ["decay"]


def test_frozen_parameters_left_out():
    net = Net()
    for p in net.encoder.parameters(): p.requires_grad_(False)
    got = {n for g in param_groups(net, 0.1) for n in _names(net, g)}
    assert got == {n for n, p in net.named_parameters() if not n.startswith("encoder")}


def test_lr_mults_longest_prefix_and_effective_lr_after_one_sgd_step():
    net = Net()
    opt = create_optimizer("sgd", net, lr=0.2, momentum=0.0, lr_mults={"encoder": 0.1, "encoder.3": 0.5})
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == pytest.approx({"encoder.decay": 0.02, "encoder.no_decay": 0.02, "encoder.3.decay": 0.1,
                                 "decay": 0.2, "no_decay": 0.2})
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    net(torch.randn(4, 3, 6, 6)).square().mean().backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    opt.step()
    for n, p in net.named_parameters():
        lr = 0.1 if n.startswith("encoder.3.") else 0.02 if n.startswith("encoder.") else 0.2
        torch.testing.assert_close(p.detach(), before[n] - lr * grads[n], rtol=0, atol=1e-7)


def test_sgd_nesterov_matches_torch_with_the_same_groups():
    a, b = Net(), Net()
    opt_a = create_optimizer("sgd", a, lr=0.1, weight_decay=0.01, momentum=0.9, nesterov=True, lr_mults={"head": 2.0})
    decay = lambda m, pre: [p for n, p in m.named_parameters() if n.startswith(pre) and p.ndim > 1]
    nodecay = lambda m, pre: [p for n, p in m.named_parameters() if n.startswith(pre) and p.ndim <= 1]
    opt_b = torch.optim.SGD([dict(params=decay(b, "encoder") + decay(b, "neck"), weight_decay=0.01),
                             dict(params=nodecay(b, "encoder") + nodecay(b, "neck"), weight_decay=0.0),
                             dict(params=decay(b, "head"), weight_decay=0.01, lr=0.2),
                             dict(params=nodecay(b, "head"), weight_decay=0.0, lr=0.2)],
                            lr=0.1, momentum=0.9, nesterov=True)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(4, 3, 6, 6, generator=g)
        for m, o in ((a, opt_a), (b, opt_b)):
            o.zero_grad(); m(x).square().mean().backward(); o.step()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-6, msg=n)


@pytest.mark.parametrize("name,cls", [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam)])
def test_adam_family_matches_torch(name, cls):
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    opt_a = create_optimizer(name, a, lr=0.01, weight_decay=0.1, betas=(0.8, 0.99))
    opt_b = cls([dict(params=[b.weight], weight_decay=0.1), dict(params=[b.bias], weight_decay=0.0)], lr=0.01, betas=(0.8, 0.99))
    x = torch.randn(5, 3)
    for m, o in ((a, opt_a), (b, opt_b)):
        for _ in range(2): o.zero_grad(); m(x).square().sum().backward(); o.step()
    torch.testing.assert_close(a.weight, b.weight); torch.testing.assert_close(a.bias, b.bias)
    assert type(opt_a) is cls


def test_lars_single_step_by_hand():
    w = nn.Parameter(torch.tensor([[3.0, 4.0]])); b = nn.Parameter(torch.tensor([2.0]))
    opt = LARS([w, b], lr=0.5, momentum=0.9, weight_decay=0.1, eta=0.02)
    w.grad = torch.tensor([[0.6, 0.8]]); b.grad = torch.tensor([0.5])
    opt.step()
    # d = g + wd*w = [0.9, 1.2] (norm 1.5); trust = 0.02 * 5 / 1.5; step = lr * trust * d
    trust = 0.02 * 5 / 1.5
    torch.testing.assert_close(w.detach(), torch.tensor([[3 - 0.5 * trust * 0.9, 4 - 0.5 * trust * 1.2]]))
    torch.testing.assert_close(b.detach(), torch.tensor([2 - 0.5 * 0.5]))     # 1-D: plain SGD, no decay
    opt.step()
    torch.testing.assert_close(b.detach(), torch.tensor([1.75 - 0.5 * (0.9 * 0.5 + 0.5)]))


def test_lars_without_1d_exclusion_adapts_and_decays_the_bias():
    b = nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = LARS([b], lr=1.0, momentum=0.0, weight_decay=0.1, eta=0.01, exclude_1d=False)
    b.grad = torch.tensor([0.6, 0.8])
    opt.step()
    torch.testing.assert_close(b.detach(), torch.tensor([2.97, 3.96]))
    b2 = nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = LARS([b2], lr=1.0, momentum=0.0, weight_decay=0.1, eta=0.01)     # excluded: plain step, no decay
    b2.grad = torch.tensor([0.6, 0.8]); opt.step()
    torch.testing.assert_close(b2.detach(), torch.tensor([2.4, 3.2]))


def _lars_reference(params, grads_seq, lr, momentum, wd, eta):
    "solo-learn / SimCLR LARS with exclude_bias_n_norm, written out plainly on copies."
    ws = [p.detach().clone() for p in params]; bufs = [None] * len(ws)
    for grads in grads_seq:
        for i, (w, g) in enumerate(zip(ws, grads)):
            if w.ndim > 1:
                d = g + wd * w
                wn, dn = w.norm(), d.norm()
                d = d * (eta * wn / dn if wn > 0 and dn > 0 else 1.0)
            else: d = g
            bufs[i] = d.clone() if bufs[i] is None else momentum * bufs[i] + d
            ws[i] = w - lr * bufs[i]
    return ws


def test_lars_matches_reference_over_steps_and_zero_weight_has_trust_one():
    torch.manual_seed(0)
    ps = [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(3)), nn.Parameter(torch.zeros(2, 2))]
    grads_seq = [[torch.randn_like(p) for p in ps] for _ in range(3)]
    ref = _lars_reference(ps, grads_seq, lr=0.3, momentum=0.9, wd=1e-2, eta=0.05)
    opt = LARS(ps, lr=0.3, momentum=0.9, weight_decay=1e-2, eta=0.05)
    for grads in grads_seq:
        for p, g in zip(ps, grads): p.grad = g.clone()
        opt.step()
    for p, r in zip(ps, ref): torch.testing.assert_close(p.detach(), r)


def test_optimizer_state_roundtrips_through_weights_only_load():
    net = Net()
    opt = create_optimizer("lars", net, lr=0.1, weight_decay=1e-6, lr_mults={"encoder": 0.5})
    net(torch.randn(2, 3, 6, 6)).sum().backward(); opt.step()
    buf = io.BytesIO(); torch.save(opt.state_dict(), buf); buf.seek(0)
    st = torch.load(buf, weights_only=True)
    opt2 = create_optimizer("lars", net, lr=0.1, weight_decay=1e-6, lr_mults={"encoder": 0.5})
    opt2.load_state_dict(st)
    assert [g["name"] for g in opt2.param_groups] == [g["name"] for g in opt.param_groups]


def test_opt_func_takes_model_or_params():
    f = opt_func("adamw", weight_decay=0.05)
    assert f.takes_model
    net = Net()
    by_model, by_params = f(net, lr=1e-3), f([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    assert [len(g["params"]) for g in by_model.param_groups] == [len(g["params"]) for g in by_params.param_groups] == [4, 9]
    g = param_groups(net, 0.05)
    assert [len(x["params"]) for x in opt_func("sgd")(g, lr=0.1).param_groups] == [4, 9]


def test_errors():
    net = Net()
    with pytest.raises(ValueError, match="known optimizers are adam, adamw, lars, sgd; did you mean 'sgd'"):
        create_optimizer("sdg", net, 0.1)
    with pytest.raises(ValueError, match="known optimizers"): opt_func("lamb")
    with pytest.raises(KeyError, match="'encodr'"): param_groups(net, 0.1, {"encodr": 0.1})
    with pytest.raises(ValueError, match="pass the model"): create_optimizer("sgd", list(net.parameters()), 0.1, lr_mults={"head": 2})
    with pytest.raises(ValueError, match="lr_mults\\['head'\\] must be >= 0"): param_groups(net, 0.1, {"head": -1})
    with pytest.raises(ValueError, match="no parameters"): create_optimizer("sgd", [], 0.1)
    with pytest.raises(ValueError, match="momentum"): LARS(net.parameters(), lr=0.1, momentum=1.5)
    with pytest.raises(ValueError, match="weight_decay"): LARS(net.parameters(), lr=0.1, weight_decay=-1)
