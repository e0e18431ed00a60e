import copy
import math

import pytest
import torch
from torch import nn

from selfsup.methods.ema import ema_update
from selfsup.train.engine import LARS, Engine, build_optimizer, lr_factor, param_groups


class Quadratic(nn.Module):
    """A tiny 'method': loss = ||W x - 1||^2 over a random batch."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self.steps_seen = []

    def forward(self, batch):
        return {"loss": ((self.norm(self.lin(batch["x"])) - 1) ** 2).mean()}

    def after_step(self, progress):
        self.steps_seen.append(progress)


def test_schedule_warmup_then_cosine():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, min_ratio=0.1) == pytest.approx(0.1)


def test_lars_step_matches_formula():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    w.grad = torch.tensor([0.6, 0.8])
    opt = LARS([{"params": [w], "weight_decay": 0.5, "lars": True}], lr=0.1, momentum=0.9, eta=0.02)
    g = torch.tensor([0.6, 0.8]) + 0.5 * torch.tensor([3.0, 4.0])  # = (2.1, 2.8), norm 3.5
    trust = 0.02 * 5.0 / 3.5
    opt.step()
    assert torch.allclose(w.detach(), torch.tensor([3.0, 4.0]) - 0.1 * trust * g)


def test_no_weight_decay_on_biases_and_norms():
    opt = build_optimizer(Quadratic(), "adamw", lr=1e-3, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and all(p.ndim >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3


def run(engine, batches):
    return [engine.train_step({"x": b})["loss"] for b in batches]


def test_lars_foreach_kernels_step_as_the_per_parameter_loop():
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [LARS(param_groups(net, 0.1), lr=0.5, momentum=0.9, eta=0.02, foreach=f) for net, f in zip(nets, (False, True))]
    for _ in range(3):
        x = torch.randn(8, 5)
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            net(x).pow(2).sum().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("opt_name", ["adamw", "lars", "sgd"])
def test_exact_resume(opt_name):
    torch.manual_seed(0)
    batches = [torch.randn(8, 4) for _ in range(6)]
    a = Quadratic()
    b = copy.deepcopy(a)
    mk = lambda m: Engine(m, m, build_optimizer(m, opt_name, lr=0.05, weight_decay=1e-2), total_steps=6, warmup_steps=2)  # noqa: E731
    full = run(mk(a), batches)
    first = mk(b)
    run(first, batches[:3])
    state = copy.deepcopy(first.state_dict())
    c = Quadratic()
    resumed = mk(c)
    resumed.load_state_dict(state)
    assert run(resumed, batches[3:]) == full[3:]


def test_step_reports_lr_clip_and_progress():
    m = Quadratic()
    e = Engine(m, m, build_optimizer(m, lr=0.1), total_steps=4, warmup_steps=0, grad_clip=1e-3)
    logs = e.train_step({"x": torch.randn(8, 4)})
    assert logs["lr"] == pytest.approx(0.1) and "grad_norm" in logs
    assert m.steps_seen == [0.25]


def test_an_unsynced_step_leaves_its_values_on_the_device():
    """``sync=False`` (the worker's): the values are the same, as 0-dim tensors the host has not waited for."""
    torch.manual_seed(0)
    x = torch.randn(8, 4)
    a, b = Quadratic(), Quadratic()
    b.load_state_dict(a.state_dict())
    synced = Engine(a, a, build_optimizer(a, lr=0.1), total_steps=4, grad_clip=1.0).train_step({"x": x})
    unsynced = Engine(b, b, build_optimizer(b, lr=0.1), total_steps=4, grad_clip=1.0).train_step({"x": x}, sync=False)
    assert all(torch.is_tensor(unsynced[k]) and unsynced[k].ndim == 0 for k in ("loss", "grad_norm"))
    assert {k: float(v) for k, v in unsynced.items()} == pytest.approx(synced)


def test_bf16_autocast_step():
    m = Quadratic()
    e = Engine(m, m, build_optimizer(m, lr=0.1), total_steps=2, precision="bf16")
    assert math.isfinite(e.train_step({"x": torch.randn(8, 4)})["loss"])


def test_ema_update():
    online, target = nn.Linear(2, 2), nn.Linear(2, 2)
    before = target.weight.detach().clone()
    ema_update(target, online, 0.9)
    assert torch.allclose(target.weight, 0.9 * before + 0.1 * online.weight.detach())


@pytest.mark.parametrize("opt_name", ["adamw", "lars", "sgd"])
def test_weight_decay_cosine_schedule(opt_name):
    m = Quadratic()
    e = Engine(m, m, build_optimizer(m, opt_name, lr=0.1, weight_decay=0.04), total_steps=4, weight_decay_end=0.4)
    seen = []
    for _ in range(4):
        e.train_step({"x": torch.randn(8, 4)})
        seen.append([g["weight_decay"] for g in e.optimizer.param_groups])
    # the decay used at step s is 0.4 + (0.04 - 0.4) (1 + cos(pi s / 4)) / 2; biases and norms stay at 0
    expected = [0.4 + (0.04 - 0.4) * 0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(4)]
    assert [w for w, _ in seen] == pytest.approx(expected)
    assert all(nd == 0.0 for _, nd in seen)
    fixed = Engine(m, m, build_optimizer(m, opt_name, lr=0.1, weight_decay=0.04), total_steps=4)
    fixed.train_step({"x": torch.randn(8, 4)})
    assert fixed.optimizer.param_groups[0]["weight_decay"] == 0.04


def test_sgd_step_matches_formula():
    """``optim.name: sgd``: ``v <- momentum v + g + wd w``, ``w <- w - lr v`` (PyTorch's SGD), no decay on biases."""
    m = nn.Linear(2, 1)
    w0, b0 = m.weight.detach().clone(), m.bias.detach().clone()
    opt = build_optimizer(m, "sgd", lr=0.1, weight_decay=0.5, momentum=0.9)
    m(torch.ones(1, 2)).sum().backward()
    opt.step()
    assert torch.allclose(m.weight, w0 - 0.1 * (torch.ones(1, 2) + 0.5 * w0))
    assert torch.allclose(m.bias, b0 - 0.1 * torch.ones(1))
