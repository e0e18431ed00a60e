"""A short training of a method on a dataset with the bare engine (no Ray), for the modalities'
learn tests: the method built and prepared as the worker builds it (the data's ``groups``, then
``Method.prepare``), the metric panel before and after, and the mean loss of every epoch."""

import torch
from torch.utils.data import DataLoader, TensorDataset

from selfsup.data.views import ViewCollate
from selfsup.methods import build_method
from selfsup.metrics.panel import evaluate
from selfsup.metrics.probes import linear_probe
from selfsup.models.backbones import build_backbone
from selfsup.train.engine import Engine, build_optimizer


def learn(name, d, params, epochs, backbone, views):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    method = build_method(name, build_backbone(in_shape=d.shape, groups=d.groups, **backbone), **params)
    method.prepare(d.train.x, d.groups)  # as the worker does before training
    probe = (d.train.x, d.train.y, d.test.x, d.test.y)
    before = evaluate(method, d.train.x[:512], "cpu", probe)
    loader = DataLoader(TensorDataset(d.train.x), batch_size=64, shuffle=True, drop_last=True, collate_fn=ViewCollate(views, method.masks()))
    engine = Engine(method, method, build_optimizer(method, lr=3e-3, weight_decay=1e-4), total_steps=epochs * len(loader), warmup_steps=len(loader))
    losses = [sum(float(engine.train_step(b)["loss"]) for b in loader) / len(loader) for _ in range(epochs)]
    return before, evaluate(method, d.train.x[:512], "cpu", probe), losses


def raw_probe(d) -> float:
    """The linear probe of the raw samples, flattened: the baseline a learned representation must beat."""
    return linear_probe(d.train.x.flatten(1).numpy(), d.train.y.numpy(), d.test.x.flatten(1).numpy(), d.test.y.numpy())
