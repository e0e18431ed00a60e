"""The Ray Train worker loop: what every data-parallel worker of a run executes.

dataset -> views -> sharded DataLoader -> backbone + method (DDP when W > 1, or FSDP) -> engine; per epoch:
train steps, label-free metrics on a fixed evaluation subset, probes when labels exist, a
checkpoint (rank 0), rank 0 logs the metrics to MLflow, then ``ray.train.report`` (all ranks).
Logging comes first so that MLflow holds every epoch Tune has seen, even when Tune stops the trial
on that report. An epoch that was logged but not checkpointed is replayed after a restart (with
the same seeds) and not logged twice.

Checkpoints (``train/checkpoints.py``): the engine state (method weights incl. heads, optimizer,
schedule step) and the epoch, with a manifest that marks the checkpoint complete; a restart resumes
from the newest complete one. The random state needs no saving: every epoch reseeds torch from
``(seed, epoch, rank)``, so resuming at an epoch restores exactly the RNG stream of that epoch, and
each batch's views and masks are drawn from a seed of ``(seed, rank, epoch, batch)``
(``data.views.SeededBatches``), whichever DataLoader process makes them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from selfsup import storage
from selfsup.config import MASKED, ExperimentConfig, views_of
from selfsup.data.datasets import EncodedImages, decode_batch
from selfsup.data.views import DistinctGroups, EncodedCollate, SeededBatches, SeededSamples, Unchanged, ViewCollate
from selfsup.methods import METHODS, Method, build_method
from selfsup.modalities import load_dataset
from selfsup.metrics import LABEL_FREE
from selfsup.metrics.panel import embed_all, evaluate, singular_values
from selfsup.models.backbones import build_backbone
from selfsup.models.saved import backbone_kwargs
from selfsup.models.tokens import enable_grad_checkpointing
from selfsup.tracking import runs
from selfsup.train import checkpoints, ray_private, sharding
from selfsup.train.engine import Engine, build_optimizer, has_conv2d, infinite_lr_factor, to_channels_last


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 1_009 + rank) % (2**31)


def sum_ranks(value: float, device) -> float:
    """The sum of ``value`` over the workers (one collective call on every rank)."""
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    t = torch.tensor([float(value)], device=device)
    dist.all_reduce(t)
    return float(t.item())


def any_rank(flag: bool, device) -> bool:
    """True on every worker if ``flag`` is true on any (so that all stop at the same step)."""
    return sum_ranks(float(flag), device) > 0


class SkippedFiles:
    """The streamed files this worker could not read (``data.on_bad_file: skip``): each printed
    once, counted per epoch (``count``, reset by the caller)."""

    def __init__(self, rank: int):
        self.rank, self.seen, self.count = rank, set(), 0

    def __call__(self, skipped) -> None:
        self.count += len(skipped)
        for s in skipped:
            if s.file not in self.seen:
                self.seen.add(s.file)
                print(f"[selfsup] WARNING: skipped an unreadable file (data.on_bad_file: skip; worker {self.rank}): {s.reason}", flush=True)


def worker_nodes(world: int) -> list[str]:
    """The Ray node ids of the run's workers (rank order; one collective call on every rank)."""
    mine = ray.get_runtime_context().get_node_id()
    if world == 1:
        return [mine]
    out: list = [None] * world
    dist.all_gather_object(out, mine)
    return out


def eval_subset(n_train: int, size: int, seed: int) -> torch.Tensor:
    """Fixed indices of the evaluation subset: the first ``size`` of a seeded permutation."""
    return torch.from_numpy(np.random.default_rng(seed).permutation(n_train)[: min(size, n_train)])


def readable(x, idx: torch.Tensor, skipped=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``idx`` of ``x`` and the indices they are: all of them for a tensor; for a streamed
    dataset, those it could read (what it skipped goes to ``skipped``, a :class:`SkippedFiles`)."""
    if torch.is_tensor(x):
        return x[idx], idx
    rows, kept, missed = x.take(idx)
    if skipped is not None:
        skipped(missed)
    return rows, idx[kept]


def probe_sets(data, size: int | None, seed: int, skipped=None):
    """``(x_train, y_train, x_test, y_test)`` for the probes: all of each split, or a fixed seeded
    subset of at most ``size`` of each (decoded once, so a streamed folder is read once; files it
    cannot read are left out with their labels when ``data.on_bad_file`` is skip)."""
    out = []
    for split in (data.train, data.test):
        idx = eval_subset(len(split.x), size or len(split.x), seed)
        if size is None and torch.is_tensor(split.x):
            out += [split.x, split.y]
        else:
            x, kept = readable(split.x, idx, skipped)
            out += [x, split.y[kept]]
    return tuple(out)


def waiting(loader, waited: list[float]):
    """The loader's batches, adding the time spent waiting for each to ``waited[0]`` (``perf/data_wait_s``)."""
    batches = iter(loader)
    while True:
        t = time.perf_counter()
        batch = next(batches, None)
        waited[0] += time.perf_counter() - t
        if batch is None:
            return
        yield batch


def compile_state(engine: Engine) -> str:
    """The run's ``selfsup.compile`` tag: ``on``, ``off`` or ``fallback: <reason>``."""
    if engine.compile_fallback:
        return f"fallback: {engine.compile_fallback}"
    return "on" if engine.compiled is not None else "off"


def load_data(cfg: ExperimentConfig):
    """The run's dataset, as its ``data:`` section says."""
    return load_dataset(**cfg.data.load_args())


def build(cfg: ExperimentConfig, in_shape, groups: tuple[int, ...] | None = None, train_x=None) -> nn.Module:
    """Backbone + method from the config, with identical initial weights on every worker
    (``groups``: a table's column widths, ``SplitData.groups``); with the training samples
    ``train_x`` (a tensor held in memory, or a streamed dataset), prepared on them (``Method.prepare``)."""
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(**backbone_kwargs(cfg.model.model_dump(), in_shape, groups))
    params = cfg.method.model_dump(exclude={"name"})
    method = build_method(cfg.method.name, backbone, **params)
    if train_x is not None:
        method.prepare(train_x, groups)
    return method


def view_maker(cfg: ExperimentConfig, data, n_views: int, local_crops: int, recipe: str | None = None, batched: bool = False):
    """The configured (or the method's) view recipe, or ``recipe``, as the data's modality makes
    it; ``batched``: made on the batch's device."""
    return cfg.data.kind.views(recipe or views_of(cfg), data, cfg.data, n_views, local_crops, batched)


def training_views(cfg: ExperimentConfig, data):
    """The view maker of the training batches (one view and masks for the masked methods)."""
    n_views = METHODS[cfg.method.name].n_views
    return view_maker(cfg, data, n_views, cfg.data.local_crops, batched=cfg.data.augment_on == "device")


def make_collate(cfg: ExperimentConfig, method: Method, data) -> ViewCollate:
    """The ``collate_fn`` of the run: the view recipe plus the method's masks (with
    ``data.augment_on: device``, the decoded batch alone: the worker makes the views; with
    ``data.decode_on: device``, the encoded images: the worker decodes them too)."""
    if cfg.data.decode_on == "device":
        return EncodedCollate(method.masks())
    views = Unchanged(1) if cfg.data.augment_on == "device" else training_views(cfg, data)
    return ViewCollate(views, method.masks())


def lidar_view(cfg: ExperimentConfig, data):
    """One random full-size view of a batch for LiDAR: the recipe's second view (BYOL's second
    pipeline, SCARF's corrupted row; no DINO local crops)."""
    maker = view_maker(cfg, data, 2, 0)
    return lambda x: maker(x)[1]


def lidar_aug_view(cfg: ExperimentConfig, data):
    """For masked methods (whose LiDAR views are their own random contexts): one random
    augmented view of a batch, the modality's ``augmentation`` with the run's data settings,
    for ``label_free/lidar_aug``; ``None`` for the two-view methods, whose LiDAR already uses it."""
    if cfg.method.name not in MASKED:
        return None
    maker = view_maker(cfg, data, 2, 0, cfg.data.kind.augmentation)
    return lambda x: maker(x)[1]


def set_schedule(engine: Engine, cfg: ExperimentConfig, steps_per_epoch: int, first_step: int) -> None:
    """The run's learning-rate schedule over its steps ``first_step ..`` (0, or where the run it
    continues ended): cosine over the run, or the infinite schedule, whose phases count from the
    first run of the chain and whose anneal is the run's last ``optim.anneal_epochs``."""
    o = cfg.optim
    engine.total_steps = first_step + cfg.train.epochs * steps_per_epoch
    if o.schedule == "infinite":
        anneal = round(o.anneal_epochs * steps_per_epoch)
        engine.lr_schedule = partial(
            infinite_lr_factor, warmup_steps=round(o.warmup_epochs * steps_per_epoch), cooldown_steps=round(o.cooldown_epochs * steps_per_epoch),
            constant_ratio=o.constant_lr_ratio, anneal_start=engine.total_steps - anneal, anneal_steps=anneal, min_ratio=o.min_lr_ratio,
        )


def train_loop(config: dict) -> None:
    """Ray Train entry point. ``config = {"experiment": ExperimentConfig dump, "run_id": MLflow run,
    "train_run": the Train run's name, "data": the loaded dataset in Ray's object store or None,
    "continues": the checkpoint of the run this one continues (``selfsup train --from``) or None}``
    (its checkpoints land in ``train.storage_path/train_run``). The driver loads the dataset once
    (it checks it before Ray starts) and shares it with every worker of every trial that loads the
    same (``DataConfig.load_args``); without it, each worker loads its own."""
    entered = time.time()
    cfg = ExperimentConfig.model_validate(config["experiment"])
    # Ray 2.60 logs every report at INFO through a logger named by its file path, which the run's
    # LoggingConfig(log_level="WARNING") does not reach; the root logger's level does.
    logging.getLogger().setLevel(logging.WARNING)
    run_id = config.get("run_id")
    runs.set_patience(cfg.tracking.patience_s)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(math.ceil(cfg.scaling.cpus_per_worker))
    device = ray.train.torch.get_device()

    data = ray.get(config["data"]) if config.get("data") is not None else load_data(cfg)
    method = build(cfg, data.shape, data.groups, data.train.x)
    dataset = TensorDataset(data.train.x) if torch.is_tensor(data.train.x) else data.train.x
    if cfg.data.decode_on == "device":
        dataset = EncodedImages(data.train.x)
    groups_of = method.batch_groups()
    if groups_of is not None:  # no two samples of a group in a batch (G-SimCLR)
        sampler = DistinctGroups(groups_of, cfg.train.batch_size, num_replicas=world, rank=rank, seed=cfg.seed)
    else:
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
    batches = SeededBatches(sampler, cfg.train.batch_size // world, seed=epoch_seed(cfg.seed, 0, rank))
    if cfg.data.uses_ray_data:
        from selfsup.train.ingest import RayDataBatches  # here: a run on the loader does not import Ray Data

        d = cfg.data
        loader = RayDataBatches(SeededSamples(dataset), batches, make_collate(cfg, method, data), d.preprocess_cpus, d.preprocess_resource,
                                d.prefetch_batches)
    else:
        loader = DataLoader(
            SeededSamples(dataset),
            batch_sampler=batches,
            collate_fn=make_collate(cfg, method, data),
            num_workers=cfg.data.loader_workers,
            persistent_workers=cfg.data.loader_workers > 0,
            pin_memory=device.type == "cuda",
        )
    steps_per_epoch = len(loader)
    device_views = training_views(cfg, data) if cfg.data.augment_on == "device" else None

    on_gpu = device.type == "cuda"
    t = cfg.train
    channels_last = has_conv2d(method) and (on_gpu if t.channels_last == "auto" else t.channels_last)
    if channels_last:
        to_channels_last(method)
    if t.grad_checkpointing and not enable_grad_checkpointing(method) and rank == 0:
        print(f"[selfsup] WARNING: train.grad_checkpointing: {cfg.model.backbone} has no transformer blocks to checkpoint", flush=True)
    if world > 1 and on_gpu:
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
    if cfg.scaling.strategy == "fsdp":
        model = method = sharding.shard(method.to(device))
    else:
        model = ray.train.torch.prepare_model(method, parallel_strategy_kwargs={"find_unused_parameters": method.unused_parameters,
                                                                                     "broadcast_buffers": method.broadcast_buffers})
        method = model.module if hasattr(model, "module") else model
    o = cfg.optim
    optimizer = build_optimizer(method, o.name, o.lr, o.weight_decay, o.momentum, o.betas, o.lars_eta)
    engine = Engine(
        model,
        method,
        optimizer,
        total_steps=cfg.train.epochs * steps_per_epoch,
        warmup_steps=round(o.warmup_epochs * steps_per_epoch),
        min_lr_ratio=o.min_lr_ratio,
        precision=cfg.train.precision,
        grad_clip=cfg.train.grad_clip,
        device=device,
        weight_decay_end=o.weight_decay_end,
        compile=on_gpu if t.compile == "auto" else t.compile,
        compile_backend=t.compile_backend,
        channels_last=channels_last,
    )

    start = 0
    run_dir = storage.join(cfg.train.storage_path, config["train_run"])
    # read onto the CPU (load_state_dict copies onto the device); sharded, by rank 0 alone, which
    # scatters it: the other ranks never hold the full state, nor does any device
    reads = rank == 0 or not engine.sharded
    state, path, problems = checkpoints.newest_readable(run_dir) if reads else (None, None, [])
    resumed = None if state is None else state["epoch"]
    if engine.sharded:
        box = [(path, resumed)]
        dist.broadcast_object_list(box, src=0)
        path, resumed = box[0]
    continues = config.get("continues")
    tags = runs.get_run(cfg.tracking.uri, run_id).tags if rank == 0 and run_id else {}
    latest = tags.get(runs.CHECKPOINT)
    if latest and latest != path and not storage.exists(latest):
        problems.append(f"{latest}: missing (the run's latest checkpoint, as its {runs.CHECKPOINT} tag says)")
    record = {runs.SKIPPED: json.dumps([*json.loads(tags.get(runs.SKIPPED, "[]")), *problems])} if problems else {}
    if rank == 0:
        for problem in problems:
            print(f"[selfsup] WARNING: checkpoint skipped: {problem}", flush=True)
    if resumed is not None:
        engine.load_state_dict(state["engine"] if reads else None)
        state = None  # the engine holds it now: not a second copy in host memory for the whole run
        start = resumed
        record[runs.RESUMED] = start
        if rank == 0:
            print(f"[selfsup] resumed from the checkpoint of epoch {start} ({path})", flush=True)
    elif continues:
        engine.load_state_dict(checkpoints.read(continues)["engine"] if reads else None)
        if rank == 0:
            print(f"[selfsup] continuing from {continues} at step {engine.step_count} of its schedule", flush=True)
    set_schedule(engine, cfg, steps_per_epoch, first_step=engine.step_count - start * steps_per_epoch)
    # rank 0 writes the checkpoints: into folders of new names where a restart trains an epoch again
    folder_name = checkpoints.restart_names(run_dir, ray_private.tracked_folders(run_dir)) if rank == 0 else checkpoints.folder_name

    logged = runs.last_step(cfg.tracking.uri, run_id, "epoch") if rank == 0 and run_id else 0
    nodes = worker_nodes(world)
    if rank == 0 and run_id:
        if logged > start == 0:
            print(f"[selfsup] WARNING: MLflow holds {logged} epoch(s) of this run but no readable checkpoint is left under "
                  f"{run_dir}: training restarts from scratch (epochs already logged are not logged again)", flush=True)
        runs.set_tags(cfg.tracking.uri, run_id, {
            **record, runs.STARTS: json.dumps([*json.loads(tags.get(runs.STARTS, "[]")), start]),
            runs.INPUT_SHAPE: json.dumps(list(data.shape)), runs.GROUPS: json.dumps(data.groups), runs.NODES: json.dumps(nodes),
        })
    if start >= cfg.train.epochs:
        # Trained to the end already: a sweep restored from a snapshot taken before this trial ended
        # runs it again. Tell Tune the final result once more (from MLflow); nothing is retrained.
        final = runs.get_run(cfg.tracking.uri, run_id).metrics if rank == 0 and run_id else {}
        ray.train.report({**final, "epoch": start})
        return
    skipped = SkippedFiles(rank)
    eval_x, _ = readable(data.train.x, eval_subset(len(data.train.x), cfg.eval.subset_size, cfg.data.split_seed), skipped)
    lidar_x = eval_x[: cfg.eval.lidar_samples] if cfg.eval.lidar_samples >= 2 else None
    view, aug_view = lidar_view(cfg, data), lidar_aug_view(cfg, data)
    probe = probe_sets(data, cfg.eval.probe_size, cfg.data.split_seed, skipped) if data.has_labels else None

    threshold = cfg.eval.collapse_rankme
    # what this start cost before its first epoch: Train's controller, worker group and process
    # group and this module's imports (launch), then data, model, checkpoint and MLflow (setup)
    startup = {"perf/launch_s": entered - config.get("launched", entered), "perf/setup_s": time.time() - entered}
    for epoch in range(start + 1, cfg.train.epochs + 1):
        torch.manual_seed(epoch_seed(cfg.seed, epoch, rank))
        batches.set_epoch(epoch)
        method.set_epoch(epoch)
        t0 = time.perf_counter()
        sums: dict = {}
        diverged, waited, checked, step = False, [0.0], 0, 0

        def diverging() -> bool:
            """Whether the loss summed on the device since the epoch began is not finite on any
            worker (the one wait for the device per ``train.log_every`` steps); a run without a
            collapse threshold stops here with the step it was caught at."""
            loss = float(sums["loss"])
            if not any_rank(not math.isfinite(loss), device):
                return False
            if threshold is None:
                raise FloatingPointError(f"train/loss is not finite ({loss} summed over this epoch's steps here, or on another worker) "
                                         f"at epoch {epoch}, caught at step {engine.step_count} (train.log_every {cfg.train.log_every})")
            return True

        skipped.count = 0
        for step, batch in enumerate(waiting(loader, waited), 1):
            skipped(batch.pop("skipped", ()))
            if "encoded" in batch:
                batch["views"] = device_views(decode_batch(batch.pop("encoded"), batch.pop("names"), data.shape[-1], device))
            elif device_views is not None:
                batch["views"] = device_views(batch["views"][0].to(device, non_blocking=True))
            for k, v in engine.train_step(batch, sync=False).items():
                sums[k] = sums.get(k, 0.0) + v
            if step % cfg.train.log_every == 0:
                checked = step
                if diverging():
                    diverged = True
                    break
        if not diverged and step > checked:
            diverged = diverging()
        t1 = time.perf_counter()
        if cfg.data.uses_ray_data and epoch < cfg.train.epochs and not diverged:
            loader.start(epoch + 1)  # its first batches are made while this epoch is evaluated
        if epoch == start + 1 and engine.compile_fallback and rank == 0:
            print(f"[selfsup] WARNING: torch.compile failed; training eagerly: {engine.compile_fallback}", flush=True)
        do_probe = probe is not None and (epoch == cfg.train.epochs or (cfg.eval.probe_every and epoch % cfg.eval.probe_every == 0))
        metrics = {"epoch": epoch, **{f"train/{k}": float(v) / steps_per_epoch for k, v in sums.items()}}
        if epoch == start + 1:
            metrics.update(startup)
        if cfg.data.on_bad_file == "skip":
            metrics["data/skipped_files"] = sum_ranks(skipped.count, device)
        if diverged:
            metrics.update({"train/loss": math.nan, **{k: math.nan for k in LABEL_FREE}})  # no embedding to measure
        else:
            metrics.update(evaluate(method, eval_x, device, probe if do_probe else None, cfg.eval.knn_k, lidar_x, view, cfg.eval.lidar_views, aug_view,
                                    cfg.eval.probe_folds))
        collapsed = threshold is not None and (diverged or metrics["label_free/rankme"] < threshold)
        if threshold is not None:
            metrics[runs.COLLAPSED_METRIC] = float(collapsed)
        t2 = time.perf_counter()
        metrics.update({
            "perf/samples_per_s": steps_per_epoch * cfg.train.batch_size / (t1 - t0),
            "perf/train_s": t1 - t0,
            "perf/data_wait_s": waited[0],
            "perf/eval_s": t2 - t1,
        })
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            # a collapsed or diverged epoch is not checkpointed: the run's latest checkpoint stays the
            # last healthy epoch's, the one export and --from take when asked to (--allow-collapsed)
            if not collapsed and (rank == 0 or engine.sharded):  # sharded: every rank gathers
                engine_state = engine.state_dict()
                if rank == 0:
                    checkpoints.write(Path(tmp), {"engine": engine_state}, epoch)
                    ckpt = ray.train.Checkpoint.from_directory(tmp)
                del engine_state
            metrics["perf/checkpoint_s"] = time.perf_counter() - t2
            metrics["perf/epoch_s"] = time.perf_counter() - t0
            last = collapsed or epoch == cfg.train.epochs
            sigma = singular_values(embed_all(method.embed, eval_x, device)) if last and not diverged else None
            if rank == 0 and run_id:
                if collapsed:
                    why = "loss not finite" if diverged else f"RankMe {metrics['label_free/rankme']:.3g} below {threshold}"
                    epoch_tags = {runs.COLLAPSED: "true", runs.COLLAPSE: f"epoch {epoch}: {why}"}
                else:
                    epoch_tags = {runs.CHECKPOINT: storage.join(run_dir, folder_name(epoch))}
                if epoch == start + 1:
                    epoch_tags[runs.COMPILE] = compile_state(engine)
                    if cfg.data.uses_ray_data:
                        epoch_tags[runs.PREPROCESS_NODES] = json.dumps(sorted(loader.nodes))
                # one write per epoch: the metrics (unless a replayed epoch already has them) and the tags
                runs.log_metrics(cfg.tracking.uri, run_id, metrics if epoch > logged else {}, step=epoch, tags=epoch_tags)
            if rank == 0 and run_id and epoch > logged:
                if sigma is not None:
                    runs.log_text(cfg.tracking.uri, run_id, json.dumps({"epoch": epoch, "singular_values": sigma}), runs.SPECTRUM)
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=folder_name(epoch) if ckpt else None)
        if config.get("fault_after_epoch") == epoch and rank == world - 1:  # SELFSUP_FAULT_AFTER_EPOCH (launch.py)
            print(f"[selfsup] fault injected: worker {rank} exits after epoch {epoch}", flush=True)
            os._exit(1)
        if collapsed:
            if rank == 0:
                print(f"[selfsup] collapsed at epoch {epoch}: {'loss not finite' if diverged else f'RankMe below {threshold}'}; stopping "
                      f"(this epoch is not checkpointed)", flush=True)
            return
