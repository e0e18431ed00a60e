"""Cost of the per-epoch metric panel: ``evaluate`` with LiDAR (128 samples x 8 views) against the
same call without it, and against one training epoch, for each example's model (no Ray).

    python benchmarks/metric_panel.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from selfsup.config import load_experiment
from selfsup.metrics.panel import evaluate
from selfsup.train.engine import Engine, build_optimizer
from selfsup.train.worker import build, lidar_view, load_data, make_collate

EXAMPLES = ["digits_vicreg", "mnist1d_vicreg", "breast_cancer_tjepa", "mnist1d_sjepa", "digits_ijepa"]


def seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    root = Path(__file__).resolve().parents[1] / "examples"
    print(f"{'example':22s} {'epoch s':>8s} {'panel s':>8s} {'no LiDAR s':>10s} {'LiDAR share':>11s} {'panel/epoch':>11s}")
    for name in EXAMPLES:
        cfg = load_experiment(root / f"{name}.yaml")
        data = load_data(cfg)
        method = build(cfg, data.shape, data.groups)
        loader = DataLoader(TensorDataset(data.train.x), batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
                            collate_fn=make_collate(cfg, method, data))
        engine = Engine(method, method, build_optimizer(method, lr=cfg.optim.lr), total_steps=10 * len(loader))
        epoch = seconds(lambda: [engine.train_step(b) for b in loader], 1)
        x = data.train.x[: cfg.eval.subset_size]
        view = lidar_view(cfg, data)
        full = seconds(lambda: evaluate(method, x, "cpu", lidar_x=x[: cfg.eval.lidar_samples], view=view, lidar_q=cfg.eval.lidar_views), args.repeats)
        bare = seconds(lambda: evaluate(method, x, "cpu"), args.repeats)
        print(f"{name:22s} {epoch:8.2f} {full:8.3f} {bare:10.3f} {(full - bare) / full:11.1%} {full / epoch:11.1%}")


if __name__ == "__main__":
    main()
