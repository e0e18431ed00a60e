"""The input pipeline: how fast each way of feeding images makes SimCLR batches, whether a training
loop waits for them, and what the Ray Train worker loop costs over the bare engine step.

1. Samples/s of the SimCLR image recipe (two views: crop, flip, colour jitter, grayscale, blur, per
   sample with torchvision), per CPU core, each on one epoch of the same JPEG images:
   (a) today's loader: a streamed image folder decoded with PIL in ``--cpus`` DataLoader processes;
   (b) Ray Data (``data.ingest: ray_data``, ``selfsup.train.ingest``) from WebDataset shards in a
       local folder, tasks of one CPU on a local Ray of ``--cpus`` CPUs;
   (c) the same from an S3-compatible bucket (moto's server on 127.0.0.1, as the tests use).
2. The data-wait share: a loop consuming Ray Data's batches (b) with a fixed step time (a matmul
   loop, calibrated; no sleep) chosen to need less than what the CPUs left beside it can make:
   the time it waited for its next batch over the epoch's time (target <= 5%), in the second of two
   epochs, started before a stand-in evaluation as the worker loop starts its next epoch.
3. The whole loop: samples/s of a real ``selfsup train`` run (Ray Train worker loop, DataLoader,
   metrics logged once per epoch) against the bare ``Engine.train_step`` on the same model and the
   same batch, one thread each (target >= 0.95).

    python benchmarks/input_pipeline.py [--images 8192] [--size 64] [--batch 128] [--cpus N]
    python benchmarks/input_pipeline.py --smoke     # seconds, for the test suite
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))


def write_jpegs(root: Path, n: int, size: int) -> None:
    """``n`` JPEGs of ``size`` pixels in 10 class folders: scikit-learn's digits, coloured and upsampled, with noise."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(0)
    for i in range(n):
        k = i % len(d.images)
        grey = np.kron(d.images[k] / 16, np.ones((size // 8, size // 8)))
        rgb = np.clip(grey[..., None] * rng.uniform(0.3, 1, 3) * 255 + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
        folder = root / f"c{d.target[k]}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(folder / f"{i}.jpg", quality=90)


def simclr_collate(size: int):
    from selfsup.data.views import ViewCollate, build_views

    return ViewCollate(build_views("simclr", (3, size, size), 2))


def seeded_batches(n: int, batch: int):
    from torch.utils.data import RandomSampler

    from selfsup.data.views import SeededBatches

    batches = SeededBatches(RandomSampler(range(n), generator=torch.Generator().manual_seed(0)), batch, seed=0)
    batches.set_epoch(1)
    return batches


def loader_rate(samples, batch: int, size: int, cpus: int) -> float:
    """(a): samples/s of one epoch through a DataLoader of ``cpus`` processes."""
    from torch.utils.data import DataLoader

    from selfsup.data.views import SeededSamples

    batches = seeded_batches(len(samples), batch)
    loader = DataLoader(SeededSamples(samples), batch_sampler=batches, collate_fn=simclr_collate(size), num_workers=cpus)
    t0 = time.perf_counter()
    count = sum(len(b["views"][0]) for b in loader)
    return count / (time.perf_counter() - t0)


def ray_data_batches(samples, batch: int, size: int):
    from selfsup.data.views import SeededSamples
    from selfsup.train.ingest import RayDataBatches

    return RayDataBatches(SeededSamples(samples), seeded_batches(len(samples), batch), simclr_collate(size), 1.0, None, 4)


def ray_data_rate(samples, batch: int, size: int) -> float:
    """(b), (c): samples/s of one epoch made by Ray Data tasks (the dataset's start included), after
    one untimed epoch (Ray's worker processes started, the modules imported)."""
    for _ in range(2):
        t0 = time.perf_counter()
        count = sum(len(b["views"][0]) for b in ray_data_batches(samples, batch, size))
    return count / (time.perf_counter() - t0)


def busy_step(x: torch.Tensor, w: torch.Tensor, reps: int) -> None:
    for _ in range(reps):
        x = torch.tanh(x @ w)


def operands() -> tuple[torch.Tensor, torch.Tensor]:
    """A step's matmul operands: large enough that the step runs in torch's kernels with Python's
    lock released, as a training step mostly does (a loop of tiny matmuls would hold it and starve
    the Ray Data threads of this process)."""
    return torch.randn(256, 512), torch.randn(512, 512) / 23


def calibrate(seconds: float) -> int:
    """Matmul repetitions that take about ``seconds`` on one thread."""
    x, w = operands()
    t0 = time.perf_counter()
    busy_step(x, w, 20)
    return max(1, round(20 * seconds / (time.perf_counter() - t0)))


def wait_share(samples, batch: int, size: int, step_s: float, eval_s: float) -> tuple[float, float, float]:
    """(2): ``(waited s, of which for the first batch, epoch s)`` of the second of two epochs of Ray
    Data batches consumed by a step of ``step_s``, the second started (``RayDataBatches.start``)
    before an evaluation of ``eval_s`` between them, as the worker loop does."""
    reps, (x, w) = calibrate(step_s), operands()
    loader = ray_data_batches(samples, batch, size)
    for epoch in (1, 2):
        loader.batches.set_epoch(epoch)
        waits = []
        t0 = time.perf_counter()
        batches = iter(loader)
        while True:
            t = time.perf_counter()
            b = next(batches, None)
            waits.append(time.perf_counter() - t)
            if b is None:
                break
            busy_step(x, w, reps)
        epoch_s = time.perf_counter() - t0
        if epoch == 1:
            loader.start(2)
            busy_step(x, w, calibrate(eval_s))
    return sum(waits), waits[0], epoch_s


def whole_loop(work: Path, epochs: int, scale: int) -> tuple[float, float]:
    """(3): ``(worker loop samples/s, bare engine samples/s)`` on a CNN over ``scale`` copies of digits at 32 pixels."""
    from sklearn.datasets import load_digits

    from selfsup.config import build_experiment
    from selfsup.train.engine import Engine, build_optimizer
    from selfsup.train.launch import train
    from selfsup.train.worker import build, load_data, make_collate

    d = load_digits()
    x = np.tile(np.kron(d.images / 16, np.ones((4, 4)))[:, None], (scale, 1, 1, 1)).astype(np.float32)
    np.savez(work / "digits32.npz", x=x, y=np.tile(d.target, scale))
    cfg = build_experiment({
        "name": "loop", "data": {"name": "npz", "path": str(work / "digits32.npz"), "views": "light", "loader_workers": 1},
        "model": {"backbone": "cnn", "embed_dim": 64, "width": 32, "depth": 3}, "method": {"name": "vicreg", "projector": [256, 256]},
        "train": {"epochs": epochs, "batch_size": 128, "storage_path": str(work / "runs")},
        "eval": {"subset_size": 128, "lidar_samples": 32, "lidar_views": 4, "probe_every": 0},
        "scaling": {"cpus_per_worker": 1}, "tracking": {"uri": f"sqlite:///{work}/mlflow.db", "artifact_location": str(work / "artifacts")},
    }, "loop.yaml")
    from mlflow.tracking import MlflowClient

    with open(work / "train.out", "w") as out, contextlib.redirect_stdout(out):
        train(cfg)
    client = MlflowClient(cfg.tracking.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("loop").experiment_id])
    loop = max(m.value for m in client.get_metric_history(run.info.run_id, "perf/samples_per_s"))

    torch.set_num_threads(1)
    data = load_data(cfg)
    method = build(cfg, data.shape, data.groups, data.train.x)
    o = cfg.optim
    engine = Engine(method, method, build_optimizer(method, o.name, o.lr, o.weight_decay, o.momentum, o.betas, o.lars_eta), total_steps=10**6)
    batch = make_collate(cfg, method, data)(list(data.train.x[:128]))
    steps = len(data.train.x) // 128
    for _ in range(3):
        engine.train_step(batch)
    t0 = time.perf_counter()
    for _ in range(steps):
        out = engine.train_step(batch, sync=False)
    float(out["loss"])
    bare = steps * 128 / (time.perf_counter() - t0)
    return loop, bare


EVAL_S = 2.0
"""The stand-in for an epoch's evaluation in the data-wait measurement, during which the next epoch
starts (the label-free metrics and checkpoint of a small run take about this)."""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (JPEG)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="loader processes / Ray's CPUs")
    parser.add_argument("--loop-epochs", type=int, default=4)
    parser.add_argument("--loop-scale", type=int, default=4, help="copies of digits in the whole-loop run")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a check that every part runs, not a measurement")
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.size, args.batch, args.cpus, args.loop_epochs, args.loop_scale = 96, 32, 32, 2, 2, 1
    import boto3
    import ray
    from moto.server import ThreadedMotoServer

    from selfsup.data.datasets import folder
    from selfsup.data.shards import read_shards, write_shards

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="inputs") as tmp:
        work = Path(tmp)
        write_jpegs(work / "images", args.images, args.size)
        write_shards(str(work / "images"), str(work / "shards"), "webdataset", shard_size=512)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            os.environ[k] = v
        boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket="data")
        uri = f"s3://data/images?endpoint_override={host}:{port}&scheme=http"
        write_shards(str(work / "images"), uri, "webdataset", shard_size=512)
        ray.init(num_cpus=args.cpus, _temp_dir=tempfile.mkdtemp(prefix="ray", dir="/tmp"), include_dashboard=False, log_to_driver=False)
        try:
            files = folder(str(work / "images"), args.size, test_fraction=0.01, stream=True).train.x
            local = read_shards(str(work / "shards"), args.size, test_fraction=0.01, stream=True).train.x
            remote = read_shards(uri, args.size, test_fraction=0.01, stream=True).train.x
            rates = {
                "(a) PIL loader, image folder": loader_rate(files, args.batch, args.size, args.cpus),
                "(b) Ray Data, local shards": ray_data_rate(local, args.batch, args.size),
                "(c) Ray Data, S3 shards": ray_data_rate(remote, args.batch, args.size),
            }
            # a step needing 3/4 of what the CPUs beside the loop (one is the loop's) make at rate (b)
            step_s = args.batch / (0.75 * rates["(b) Ray Data, local shards"] * max(1, args.cpus - 1) / args.cpus)
            waited, first, epoch = wait_share(local, args.batch, args.size, step_s, eval_s=EVAL_S)
            loop, bare = whole_loop(work, args.loop_epochs, args.loop_scale)
        finally:
            ray.shutdown()
            server.stop()
    print(f"{len(files)} JPEGs of {args.size}x{args.size}, SimCLR recipe (2 views), batch {args.batch}, {args.cpus} CPUs")
    print(f"{'source':32s} {'samples/s':>10s} {'per core':>9s}")
    for name, rate in rates.items():
        print(f"{name:32s} {rate:10.1f} {rate / args.cpus:9.1f}")
    print(f"data wait: {waited:.2f} s of a {epoch:.2f} s epoch ({100 * waited / epoch:.1f}%; {first:.2f} s of it for the first batch), "
          f"step {1000 * step_s:.0f} ms, Ray Data from local shards, second epoch, started {EVAL_S:.0f} s before it")
    print(f"whole loop: {loop:.0f} samples/s in the Ray Train worker loop, {bare:.0f} bare engine steps: ratio {loop / bare:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
