"""Each method learns on real data (digits) in seconds, without Ray: the linear probe improves on
the same network at initialisation and the representation does not collapse."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from selfsup.data.datasets import digits
from selfsup.data.views import RandomViews, ViewCollate
from selfsup.methods import METHODS, build_method
from selfsup.metrics.panel import evaluate
from selfsup.models.backbones import build_backbone
from selfsup.train.engine import Engine, build_optimizer

EPOCHS = {"byol": 10}  # BYOL's bootstrap starts slower than the others; 6 epochs for the rest
PARAMS = {
    "vicreg": dict(projector=[256, 256]),
    "simclr": dict(projector=[128, 64], temperature=0.2),
    "mocov3": dict(projector=[128, 64], predictor=[128, 64], temperature=0.2, base_momentum=0.99),
    "byol": dict(projector=[128, 64], predictor=[128, 64], base_momentum=0.99),
    "barlowtwins": dict(projector=[256, 256], lambd=0.0051),
}


def test_every_method_is_covered():
    assert set(PARAMS) == set(METHODS)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_method_learns_on_digits(name):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = digits()
    method = build_method(name, build_backbone("cnn", data.shape, 64, 16, 2), **PARAMS[name])
    probe = (data.train.x, data.train.y, data.test.x, data.test.y)
    before = evaluate(method, data.train.x[:512], "cpu", probe)
    loader = DataLoader(TensorDataset(data.train.x), batch_size=128, shuffle=True, drop_last=True, collate_fn=ViewCollate(RandomViews()))
    epochs = EPOCHS.get(name, 6)
    engine = Engine(method, method, build_optimizer(method, lr=3e-3, weight_decay=1e-4), total_steps=epochs * len(loader), warmup_steps=len(loader))
    for _ in range(epochs):
        for batch in loader:
            engine.train_step(batch)
    after = evaluate(method, data.train.x[:512], "cpu", probe)

    assert after["probe/linear_acc"] > 0.95  # chance is 0.1
    assert after["probe/linear_acc"] > before["probe/linear_acc"] + 0.01
    assert after["label_free/rankme"] > 12 > before["label_free/rankme"]
    assert after["label_free/rankme_projector"] > 20  # collapse would be ~1
    assert method.embed(data.test.x[:4]).shape == (4, 64)
