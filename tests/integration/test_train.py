"""`selfsup train` on a real local Ray cluster with a real sqlite MLflow store."""

import json
import os

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from selfsup.tracking.runs import COMPILE, PREPROCESS_NODES, RESUMED
from tests.unit.test_image_data import write_images
from tests.unit.test_signals import write_records
from selfsup.train.launch import train

CHANCE = 0.1  # 10 digit classes


def only_run(uri):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("t")
    (run,) = client.search_runs([exp.experiment_id])
    return client, run


def test_two_worker_run_learns_is_tracked_and_exports(ray_cluster, small_config, workdir, capfd):
    import torch

    from selfsup.cli import main
    from selfsup.models.saved import load_backbone
    from selfsup.train.worker import build

    cfg = small_config(**{"scaling.num_workers": 2, "train.epochs": 4})
    metrics = train(cfg)
    assert metrics["epoch"] == 4
    printed = capfd.readouterr()
    lines = printed.out.splitlines()
    assert lines[0].startswith("run t-") and "vicreg on digits, 4 epochs; Ray's and Train's output: " in lines[0]
    bars = [ln for ln in lines if ln.startswith("epoch ")]
    assert bars[-1].startswith("epoch 4/4 [####################] loss ") and "rankme" in bars[-1] and "lidar" in bars[-1], lines
    assert len(bars) <= 4 and "core_worker" not in printed.out + printed.err and "INFO" not in printed.out + printed.err
    assert metrics["probe/linear_acc"] > CHANCE + 0.7
    assert metrics["probe/knn_acc"] > CHANCE + 0.6
    assert metrics["label_free/rankme"] > 8  # a collapsed embedding has RankMe ~ 1
    assert 0 <= metrics["perf/data_wait_s"] < metrics["perf/train_s"]  # the time the loop waited for batches

    client, run = only_run(cfg.tracking.uri)
    assert run.info.status == "FINISHED"
    assert run.data.params["scaling.num_workers"] == "2" and run.data.params["method.name"] == "vicreg"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "label_free/rankme")] == [1, 2, 3, 4]
    assert run.data.metrics["probe/linear_acc"] == pytest.approx(metrics["probe/linear_acc"])
    config_yaml = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="config.yaml", tracking_uri=cfg.tracking.uri)
    assert "vicreg" in open(config_yaml).read()

    # `selfsup export` rebuilds the trained backbone: the checkpoint's weights, not the initial ones
    assert run.data.tags["selfsup.checkpoint"].endswith("/epoch-00004") and run.data.tags["selfsup.input_shape"] == "[1, 8, 8]"
    assert main(["export", run.info.run_id, "--out", str(workdir / "exported"), "--tracking-uri", cfg.tracking.uri]) == 0
    loaded = load_backbone(workdir / "exported")
    method = build(cfg, (1, 8, 8))
    state = torch.load(f"{run.data.tags['selfsup.checkpoint']}/state.pt", map_location="cpu", weights_only=False)
    method.load_state_dict(state["engine"]["method"])
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), method.backbone.eval()(x))
        assert not torch.equal(loaded(x), build(cfg, (1, 8, 8)).backbone.eval()(x))
    capfd.readouterr()
    assert main(["export", "nope", "--out", str(workdir / "x"), "--tracking-uri", cfg.tracking.uri]) != 0
    assert "export: run 'nope' not found" in capfd.readouterr().err


def test_streamed_folder_with_multicrop_made_on_the_device_skips_an_unreadable_file(ray_cluster, small_config, workdir):
    write_images(workdir / "images" / "train", ["a", "b"], n=16, size=16)
    write_images(workdir / "images" / "val", ["a", "b"], n=8, size=16)
    (workdir / "images" / "train" / "b" / "0.png").write_bytes(b"\x89PNG truncated")  # 32 files, 2 full batches
    cfg = small_config(**{
        "data": {"name": "folder", "path": str(workdir / "images"), "image_size": 16, "stream": True, "loader_workers": 1,
                 "views": "dino", "local_crops": 2, "crop_scale": [0.5, 1.0], "on_bad_file": "skip", "augment_on": "device"},
        "method": {"name": "dino", "hidden": 64, "bottleneck": 32, "prototypes": 64, "head_batch_norm": True},
        "train.epochs": 2, "train.batch_size": 16, "eval.subset_size": 32, "eval.probe_size": 16,
    })
    metrics = train(cfg)
    assert metrics["epoch"] == 2 and metrics["train/loss"] > 0 and 0.0 <= metrics["probe/linear_acc"] <= 1.0
    client, run = only_run(cfg.tracking.uri)
    assert run.info.status == "FINISHED" and run.data.params["data.stream"] == "True"
    # the broken file is met once per epoch, counted each time, and named (once) in the run's log
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "data/skipped_files")] == [(1, 1.0), (2, 1.0)]
    (log,) = [f.read_text() for f in (workdir / "runs").glob("*/train.log")]
    assert log.count("skipped an unreadable file") == 1 and "0.png: not a readable image" in log


def test_signal_jepa_on_streamed_wfdb_records_with_two_workers_compiled(ray_cluster, small_config, workdir):
    labels = write_records(workdir / "ecg", n=24, fs=100, seconds=1)
    cfg = small_config(**{
        "data": {"name": "wfdb", "path": str(workdir / "ecg"), "labels": str(labels), "stream": True, "loader_workers": 1, "views": "none"},
        "model": {"backbone": "vit1d", "patch_size": 10, "embed_dim": 32, "depth": 1, "heads": 2},
        "method": {"name": "sjepa", "predictor_dim": 16, "predictor_depth": 1, "predictor_heads": 2, "min_block": 2},
        "train.epochs": 2, "train.batch_size": 8, "eval.subset_size": 16, "eval.probe_size": 8, "scaling.num_workers": 2,
        # the GPU defaults' paths, on the CPU under DDP: Dynamo's capture of the step, split at DDP's
        # buckets (Inductor's code generation, two minutes of both cores here, is test_compile.py's)
        "train.compile": True, "train.compile_backend": "aot_eager", "train.grad_checkpointing": True,
    })
    metrics = train(cfg)
    assert metrics["epoch"] == 2 and metrics["train/loss"] > 0 and 0.0 <= metrics["probe/linear_acc"] <= 1.0
    client, run = only_run(cfg.tracking.uri)
    assert run.info.status == "FINISHED" and run.data.params["method.name"] == "sjepa" and run.data.params["data.name"] == "wfdb"
    assert run.data.tags[COMPILE] == "on"


def test_fsdp_run_of_a_vit_learns_resumes_after_a_lost_worker_and_exports(ray_cluster, small_config, workdir, monkeypatch):
    """scaling.strategy: fsdp on two gloo workers: I-JEPA's ViT, predictor and EMA target sharded,
    a worker killed after epoch 2 and the run resumed from the full-state checkpoint, every epoch
    logged once, and the checkpoint exported as an ordinary backbone."""
    import torch

    from selfsup.cli import main
    from selfsup.models.saved import load_backbone

    epochs = 8
    cfg = small_config(**{
        "data": {"views": "crop", "image_size": 16, "crop_scale": [0.6, 1.0]},
        "model": {"backbone": "timm", "timm_name": "vit_tiny_patch16_224", "patch_size": 4,
                  "timm_kwargs": {"depth": 2, "embed_dim": 64, "num_heads": 4, "class_token": False, "global_pool": "avg", "fc_norm": False}},
        "method": {"name": "ijepa", "predictor_dim": 32, "predictor_depth": 1, "predictor_heads": 2, "n_pred": 4, "min_keep": 4,
                   "enc_scale": [0.85, 1.0], "pred_scale": [0.15, 0.2]},
        "optim.lr": 1e-3, "train.epochs": epochs, "train.max_failures": 2, "scaling.num_workers": 2, "scaling.strategy": "fsdp",
        "eval.probe_every": epochs,
    })
    metrics = train_losing_a_worker(cfg, monkeypatch)
    assert metrics["epoch"] == epochs and metrics["probe/linear_acc"] > CHANCE + 0.4 and metrics["label_free/rankme"] > 1.5
    client, run = only_run(cfg.tracking.uri)
    assert run.info.status == "FINISHED" and run.data.params["scaling.strategy"] == "fsdp"
    assert run.data.tags[RESUMED] == "2", "restarted from the checkpoint of epoch 2, read by rank 0 and scattered"
    loss = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss"))
    assert [step for step, _ in loss] == list(range(1, epochs + 1)) and loss[-1][1] < 0.5 * loss[0][1]

    assert main(["export", run.info.run_id, "--out", str(workdir / "exported"), "--tracking-uri", cfg.tracking.uri]) == 0
    state = torch.load(f"{run.data.tags['selfsup.checkpoint']}/state.pt", map_location="cpu", weights_only=True)
    weights = state["engine"]["method"]
    assert weights["target.model.blocks.0.attn.qkv.weight"].shape == (192, 64)  # full tensors, not one worker's shard
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        assert load_backbone(workdir / "exported")(x).shape == (3, 64)


def train_losing_a_worker(cfg, monkeypatch, epoch: int = 2) -> dict:
    """Train ``cfg`` with its last Ray Train worker exiting abruptly right after it reports
    ``epoch`` (SELFSUP_FAULT_AFTER_EPOCH: a kill at a known point, not a race with a timer)."""
    monkeypatch.setenv("SELFSUP_FAULT_AFTER_EPOCH", str(epoch))
    return train(cfg)


def digit_shards(folder) -> str:
    """scikit-learn's digits as WebDataset shards of ``.npy`` samples with ``.cls`` labels in ``folder/shards``."""
    import numpy as np
    from sklearn.datasets import load_digits

    from selfsup.data.shards import write_shards

    d = load_digits()
    np.savez(folder / "digits.npz", x=(d.images[:, None] / 16).astype(np.float32), y=d.target)
    write_shards(str(folder / "digits.npz"), str(folder / "shards"), "webdataset", shard_size=500)
    return str(folder / "shards")


def test_lost_worker_resumes_from_checkpoint(ray_cluster, small_config, workdir, monkeypatch, capfd):
    """Digits streamed from WebDataset shards, so through Ray Data (``data.ingest: auto``), whose
    tasks make the batches; the worker is killed after epoch 2 and resumes. Its losses equal,
    bitwise, those of a run of the same shards through the DataLoader without a fault: Ray Data
    makes the loader's batches, and the restarted worker replays its epochs exactly."""
    epochs = 3
    data = {"name": "shards", "path": digit_shards(workdir), "stream": True, "views": "light"}
    cfg = small_config(**{"data": data, "train.epochs": epochs, "train.max_failures": 2})
    assert cfg.data.uses_ray_data
    metrics = train_losing_a_worker(cfg, monkeypatch)

    assert metrics["epoch"] == epochs
    client, run = only_run(cfg.tracking.uri)
    assert run.info.status == "FINISHED"
    assert run.data.tags[RESUMED] == "2" and run.data.tags["selfsup.starts"] == "[0, 2]", "restarted from the checkpoint of epoch 2"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "epoch")]
    assert sorted(steps) == list(range(1, epochs + 1)), "every epoch logged once"
    first = capfd.readouterr().out.splitlines()[0]  # names the run's log, where Ray's and the workers' output goes
    log = first.split("Ray's and Train's output: ")[1].split(" (--verbose")[0]
    assert "fault injected: worker 0 exits after epoch 2" in open(log).read()
    assert json.loads(run.data.tags[PREPROCESS_NODES]) == [ray_cluster.get_runtime_context().get_node_id()]

    monkeypatch.delenv("SELFSUP_FAULT_AFTER_EPOCH")
    plain = small_config(**{"name": "u", "data": {**data, "ingest": "loader"}, "train.epochs": epochs})
    train(plain)
    client = MlflowClient(plain.tracking.uri)
    (loader_run,) = client.search_runs([client.get_experiment_by_name("u").experiment_id])
    losses = [[m.value for m in sorted(client.get_metric_history(r.info.run_id, "train/loss"), key=lambda m: m.step)] for r in (run, loader_run)]
    assert losses[0] == losses[1] and len(losses[0]) == epochs


def test_continuing_a_finished_run_on_new_data_with_an_anneal(ray_cluster, small_config, workdir):
    """``selfsup train --from RUN`` under the infinite schedule: the continuation starts from the
    run's newest checkpoint (its weights and the schedule's step: no warmup again), trains on other
    data, anneals to min_lr_ratio * lr, and is logged as the run's child in its experiment."""
    import numpy as np
    import torch

    from selfsup.config import ConfigError
    from selfsup.data.datasets import digits

    schedule = {"optim.schedule": "infinite", "optim.warmup_epochs": 1, "optim.cooldown_epochs": 1, "optim.constant_lr_ratio": 0.5,
                "optim.min_lr_ratio": 0.05, "optim.lr": 3e-3}
    first_cfg = small_config(**{**schedule, "train.epochs": 3})
    train(first_cfg)
    client, first = only_run(first_cfg.tracking.uri)
    first_state = torch.load(f"{first.data.tags['selfsup.checkpoint']}/state.pt", weights_only=True)["engine"]

    d = digits()
    np.savez(workdir / "inverted.npz", x=1.0 - d.train.x.numpy(), y=d.train.y.numpy())  # new data, the same shape
    cfg = small_config(**{**schedule, "name": "more", "data": {"name": "npz", "path": str(workdir / "inverted.npz"), "views": "light"},
                          "train.epochs": 2, "optim.anneal_epochs": 2})
    with pytest.raises(ConfigError, match="--from nope: no such run"):
        train(cfg, from_run="nope")
    with pytest.raises(ConfigError, match="continuing needs optim.schedule: infinite"):
        train(cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"schedule": "cosine", "anneal_epochs": 0.0})}), from_run=first.info.run_id)
    metrics = train(cfg, from_run=first.info.run_id)
    assert metrics["epoch"] == 2

    (run,) = [r for r in client.search_runs([first.info.experiment_id]) if r.info.run_id != first.info.run_id]
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == first.info.run_id
    assert run.data.tags["selfsup.continues"] == first.info.run_id and run.data.params["data.name"] == "npz"
    state = torch.load(f"{run.data.tags['selfsup.checkpoint']}/state.pt", weights_only=True)["engine"]
    n = len(d.train.x)
    new_steps = (n - round(0.2 * n)) // 128  # an epoch of the new data (its default 20% held out)
    assert first_state["step"] == 3 * (n // 128) and state["step"] == first_state["step"] + 2 * new_steps  # the schedule's position carried on
    lr = [v for _, v in sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/lr"))]
    first_lr = [v for _, v in sorted((m.step, m.value) for m in client.get_metric_history(first.info.run_id, "train/lr"))]
    assert first_lr[-1] == pytest.approx(0.5 * 3e-3)  # the first run ended in its constant phase
    assert lr[0] < first_lr[-1] and lr[1] < lr[0]  # annealing from there, never warming up again
    assert lr[1] > 0.05 * 3e-3  # epoch means: the last step alone is at min_lr_ratio * lr

    # A continuation that diverges at its first step (infinite noise on its views): its collapsed
    # epoch is not checkpointed, the run ends KILLED with the collapse tags, and export refuses it.
    from selfsup.cli import main

    diverging = small_config(**{**schedule, "name": "diverge", "train.epochs": 2, "data.noise_std": float("inf"), "eval.collapse_rankme": 1.0})
    metrics = train(diverging, from_run=first.info.run_id)
    assert metrics["collapsed"] == 1.0 and metrics["epoch"] == 1
    (bad,) = [r for r in client.search_runs([first.info.experiment_id]) if r.info.run_name.startswith("diverge-")]
    assert bad.info.status == "KILLED" and bad.data.tags["selfsup.stopped_by"] == "collapse"
    assert bad.data.tags["selfsup.collapse"] == "epoch 1: loss not finite" and "selfsup.checkpoint" not in bad.data.tags
    assert not [d for root, dirs, _ in os.walk(workdir / "runs") if "diverge" in root for d in dirs if d.startswith("epoch-")]
    assert main(["export", bad.info.run_id, "--out", str(workdir / "x"), "--tracking-uri", cfg.tracking.uri]) == 2
    assert main(["export", bad.info.run_id, "--out", str(workdir / "x"), "--tracking-uri", cfg.tracking.uri, "--allow-collapsed"]) == 2
    # a run that collapsed after healthy epochs hands on its last healthy checkpoint, when asked to
    client.set_tag(first.info.run_id, "selfsup.collapsed", "true")
    client.set_tag(first.info.run_id, "selfsup.collapse", "epoch 4: loss not finite")
    assert main(["export", first.info.run_id, "--out", str(workdir / "y"), "--tracking-uri", cfg.tracking.uri]) == 2
    with pytest.raises(ConfigError, match=r"--from \w+: the run collapsed \(epoch 4: loss not finite\): its weights are not a result"):
        train(cfg, from_run=first.info.run_id)
    assert main(["export", first.info.run_id, "--out", str(workdir / "y"), "--tracking-uri", cfg.tracking.uri, "--allow-collapsed"]) == 0
    assert json.loads((workdir / "y" / "backbone.json").read_text())["source"]["checkpoint"] == first.data.tags["selfsup.checkpoint"]
