"""The method contract: a step moves the online weights; target/momentum networks get no
gradient and move only by their EMA; ``embed`` and ``project`` shapes."""

import copy

import pytest
import torch

from selfsup.methods import METHODS, build_method
from selfsup.models.backbones import build_backbone
from selfsup.train.engine import Engine, build_optimizer, cosine_momentum

PARAMS = {
    "vicreg": dict(projector=[32, 32]),
    "simclr": dict(projector=[32, 16]),
    "barlowtwins": dict(projector=[32, 32]),
    "mocov3": dict(projector=[32, 16], predictor=[32, 16], base_momentum=0.9),
    "byol": dict(projector=[32, 16], predictor=[32, 16], base_momentum=0.9),
}
TARGETS = {"byol": "target", "mocov3": "momentum_encoder"}


def test_cosine_momentum():
    assert cosine_momentum(0.99, 0.0) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 0.5) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 1.0) == pytest.approx(1.0)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_step_updates_online_and_ema_only(name):
    torch.manual_seed(0)
    method = build_method(name, build_backbone("cnn", (1, 8, 8), 24, 8, 2), **PARAMS[name])
    assert method.embed(torch.rand(3, 1, 8, 8)).shape == (3, 24)
    assert method.project(torch.rand(3, 1, 8, 8)).shape[0] == 3
    before = copy.deepcopy(method.state_dict())
    engine = Engine(method, method, build_optimizer(method, lr=1e-2), total_steps=4)
    engine.train_step({"views": [torch.rand(16, 1, 8, 8), torch.rand(16, 1, 8, 8)]})

    online = dict(method.backbone.named_parameters())
    assert any(not torch.equal(p, before[f"backbone.{k}"]) for k, p in online.items())
    if name in TARGETS:
        target = getattr(method, TARGETS[name])
        m = cosine_momentum(0.9, 0.25)  # after step 1 of 4
        for k, p in target.backbone.named_parameters():
            assert not p.requires_grad and p.grad is None
            expected = m * before[f"{TARGETS[name]}.backbone.{k}"] + (1 - m) * online[k].detach()
            assert torch.allclose(p, expected, atol=1e-6)
