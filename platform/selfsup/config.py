"""Experiment and sweep configuration: pydantic models, YAML loading and ``--set`` overrides.

Every section of an experiment YAML has a model here, except ``method:``, whose variants live in
the method files (``methods/<name>.py``) and are gathered from the registry; the dataset names,
view recipes and backbones of ``data:`` and ``model:`` come from the modality files
(``modalities/<name>.py``), which also check what their datasets need. Unknown keys, wrong
types and impossible values raise :class:`ConfigError` with one line naming the file and the dotted key path, before
anything (Ray, MLflow, data) starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, create_model, model_validator

from selfsup.methods import METHODS
from selfsup.modalities import DATASETS, MODALITIES, dataset, modality_of
from selfsup.models.backbones import BACKBONES as BUILT, TRANSFORMERS, has_patches
from selfsup.errors import ConfigError  # noqa: F401 (raised here, imported from here by the layers above)
from selfsup.sections import Section


NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
"""Run, sweep and experiment names: they become folder names under ``train.storage_path`` and the
artifact location, so no ``/`` and no leading dot (``..`` cannot climb out of where they belong)."""


class SharedData(Section):
    """Dataset and view augmentation.

    ``name`` is a built-in dataset (``digits``), ``npz`` for a user file with ``x`` (and optional
    ``y``; ``x_test``/``y_test`` for a fixed test split, else ``test_fraction`` of it is held out),
    ``folder`` for images in class subfolders, ``shards`` for WebDataset/Parquet shards of images, or
    ``cifar10`` / ``cifar100`` for the CIFAR python pickles at ``path``. Folders of files (``folder``,
    ``video_folder``, ``wfdb``), shards and tables may be at any pyarrow filesystem URI such as
    ``s3://bucket/prefix`` (``?endpoint_override=HOST:PORT&scheme=http`` for a server of your own). ``image_size`` resizes every image (``folder`` and ``shards`` default to 32; the others
    keep their own size unless set, e.g. 16 to upsample digits for a ViT). ``samples`` sets how many
    samples a generated dataset makes (``synthetic_volumes``, ``synthetic_scenes``,
    ``synthetic_activities``, ``pendulum_rollouts``; each has its own default count).

    ``views`` is the augmentation recipe (``auto``: the method's paper recipe; see
    ``selfsup.data.views``). ``crop_scale`` (global crops) and ``flip`` default to the recipe's;
    ``noise_std`` applies to ``light``, ``color_strength`` scales the colour jitter of the paper
    recipes (0 turns colour distortion off), ``local_*`` shape DINO's local crops.

    Signals (``mnist1d``, ``ucr`` with ``path`` = a bundled UCR/UEA name, ``signal_npz``) take the
    ``signal`` recipe: ``crop_scale`` is the kept fraction of the length, ``noise_std`` the jitter,
    ``amplitude_scale`` and ``channel_dropout`` as named. ``wfdb`` reads WFDB records (``.hea`` +
    signal files) under the folder ``path``, cut or padded to ``signal_length`` samples.

    Tables (``table`` with ``path`` = breast_cancer | wine | iris, or ``csv`` / ``parquet`` with a
    ``columns`` schema; ``missing``: error or impute) take the ``scarf`` recipe, which corrupts
    ``corruption_rate`` of each row's features. ``none`` (the JEPAs' recipe) passes samples unchanged.

    ``stream`` (``folder``, ``shards``, ``wfdb``, ``video_folder``) keeps the images or records on disk and decodes them on
    access, for ImageNet-scale folders and large ECG collections; ``loader_workers`` DataLoader processes decode and augment in parallel.
    A streamed file that cannot be read mid-run fails the run (``on_bad_file: fail``, naming the
    file) or is skipped (``skip``): each skip is printed once and counted per epoch in the
    ``data/skipped_files`` metric.

    ``augment_on``: ``loader`` makes the views in the DataLoader (per sample, torchvision, in
    ``loader_workers`` CPU processes); ``device`` makes them on the training device from the decoded
    batch, with the same recipes as batched tensor ops (``selfsup.data.batch_views``): for GPUs
    that the loader's CPUs cannot feed. Images only.

    ``decode_on: device`` (with ``augment_on: device``, images streamed from ``folder`` or
    ``shards``): the loader only reads each image's bytes; the training worker decodes the JPEGs on
    its device (``torchvision.io.decode_jpeg``, nvJPEG on a GPU; other formats on its CPU) and
    resizes them there, so a GPU node needs CPUs only to read bytes. Resizing on the device is close
    to PIL's, not bitwise; an image that does not decode fails the run naming it.

    ``ingest``: ``loader`` reads, decodes and augments in each training worker's DataLoader
    (``loader_workers`` processes on the worker's node); ``ray_data`` does it in Ray Data tasks of
    ``preprocess_cpus`` CPUs on whichever nodes have them (only on nodes that offer the custom
    resource ``preprocess_resource`` when it is set: the CPU-only nodes of a mixed cluster), each
    worker receiving its batches ``prefetch_batches`` ahead (``selfsup.train.ingest``); ``auto``
    (default): ``ray_data`` for streamed data at a URI (``s3://``, ``gs://``, ...) or in shards
    (``shards``), ``loader`` otherwise (data in memory travels once through Ray's object store).
    Batches are the same either way, bitwise, for the same seed.
    """

    name: Literal[tuple(DATASETS)] = "digits"
    path: str | None = None
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: int = 0
    samples: int | None = Field(None, ge=20)
    views: Literal[("auto", *dict.fromkeys(r for m in MODALITIES.values() for r in m.recipes))] = "auto"
    crop_scale: tuple[float, float] | None = None
    noise_std: float = Field(0.05, ge=0.0)
    stream: bool = False
    on_bad_file: Literal["fail", "skip"] = "fail"
    loader_workers: int = Field(0, ge=0)
    augment_on: Literal["loader", "device"] = "loader"
    decode_on: Literal["loader", "device"] = "loader"
    ingest: Literal["auto", "loader", "ray_data"] = "auto"
    preprocess_cpus: float = Field(1.0, gt=0.0)
    preprocess_resource: str | None = Field(None, min_length=1)
    prefetch_batches: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "SharedData":
        if self.crop_scale is not None and not 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        kind, source = self.kind, dataset(self.name)
        if source.path != "none" and not self.path:
            raise ValueError(f"data.name {self.name!r} needs data.path")
        if self.views != "auto" and self.views not in kind.recipes:
            raise ValueError(f"data.views {self.views!r} is not for {kind.plural} ({self.name!r}); {kind.plural} take "
                             f"{', '.join(map(repr, kind.recipes))} (or auto)")
        if self.augment_on == "device" and not kind.device_views:
            raise ValueError(f"data.augment_on: device makes the views of {', '.join(m.plural for m in MODALITIES.values() if m.device_views)} "
                             f"on the device; {self.name!r} holds {kind.plural}")
        if self.samples is not None and not source.generated:
            made = [name for name in DATASETS if dataset(name).generated]
            raise ValueError(f"data.samples sets how many samples a generated dataset makes ({', '.join(made)}), not {self.name!r}")
        if self.stream and not source.streams:
            streamed = [name for name in DATASETS if dataset(name).streams]
            raise ValueError(f"data.stream applies to datasets read file by file ({', '.join(streamed)}), not {self.name!r}")
        if self.on_bad_file == "skip" and not self.stream:
            raise ValueError("data.on_bad_file: skip applies to streamed data (data.stream: true); data read into memory fails on its first unreadable file, before training")
        if self.decode_on == "device":
            if self.augment_on != "device" or not self.stream or self.name not in ("folder", "shards"):
                raise ValueError("data.decode_on: device decodes images streamed from folder or shards (data.stream: true) on the device "
                                 f"that makes their views (data.augment_on: device); got data.name {self.name!r}, stream {self.stream}, "
                                 f"augment_on {self.augment_on}")
            if self.on_bad_file == "skip":
                raise ValueError("data.on_bad_file: skip applies to images decoded by the loader; data.decode_on: device fails on an image that does not decode, naming it")
        if self.uses_ray_data and self.loader_workers:
            raise ValueError("data.loader_workers applies to data.ingest: loader; with ray_data, Ray Data tasks of data.preprocess_cpus make the batches")
        for key in ("preprocess_cpus", "preprocess_resource", "prefetch_batches"):
            if self.changed(key) and not self.uses_ray_data:
                raise ValueError(f"data.{key} applies to data.ingest: ray_data (this data is read by the loader: {self.ingest_reason})")
        for other in MODALITIES.values():
            for key in other.keys:
                if self.changed(key) and other is not kind:
                    raise ValueError(f"data.{key} applies to {other.plural}, not {kind.plural}")
        for name in DATASETS:
            for key in dataset(name).keys:
                if self.changed(key) and name != self.name:
                    raise ValueError(f"data.{key} applies to data.name {name!r} only, not {self.name!r}")
        kind.check(self)
        return self

    def changed(self, key: str) -> bool:
        """Whether ``key`` differs from its default (a key of another kind of data may then be refused)."""
        return getattr(self, key) != type(self).model_fields[key].get_default(call_default_factory=True)

    @property
    def uses_ray_data(self) -> bool:
        """Whether Ray Data makes the batches (``ingest``, ``auto`` resolved)."""
        if self.ingest != "auto":
            return self.ingest == "ray_data"
        return self.stream and ("://" in (self.path or "") or self.name in ("shards", "video_shards"))

    @property
    def ingest_reason(self) -> str:
        """Why the data takes the path it takes, for messages."""
        if self.ingest != "auto":
            return f"data.ingest: {self.ingest}"
        return "streamed from a URI or shards" if self.uses_ray_data else "data.ingest: auto, and the data is not streamed from a URI or shards"

    @property
    def kind(self):
        """The data's :class:`~selfsup.modalities.Modality`."""
        return modality_of(self.name)

    @property
    def modality(self) -> str:
        return self.kind.name

    def load_args(self) -> dict:
        """The keyword arguments of ``selfsup.modalities.load_dataset`` for this section: what
        loading the data depends on (two runs with equal ``load_args`` can share one loaded copy)."""
        shared = {key: getattr(self, key) for key in ("name", "path", "test_fraction", "split_seed", "stream", "on_bad_file", "samples")}
        own = {key: getattr(self, key) for kind in MODALITIES.values() for key in kind.loads}
        return {**shared, **{key: v.model_dump() if isinstance(v, Section) else v for key, v in own.items()}}


DataConfig = create_model("DataConfig", __base__=SharedData, __doc__=SharedData.__doc__,
                          **{key: field for kind in MODALITIES.values() for key, field in kind.fields.items()})
"""The ``data:`` section: the shared keys (:class:`SharedData`) plus each modality's own
(``Modality.fields``)."""


class SharedModel(Section):
    """Backbone: ``cnn`` (small conv net), ``cnn1d`` (its 1-D twin, for signals), ``mlp``,
    ``ft_transformer`` (table columns as tokens, T-JEPA), ``vit1d`` (time-patch ViT, signal JEPA) or
    ``timm`` (any timm model ``timm_name``, random init). ``embed_dim``/``width``/``depth`` size the
    cnn and mlp; ``embed_dim``, ``depth`` (blocks), ``heads`` and ``registers`` (extra learned tokens:
    T-JEPA's [REG], the ECG ViT's registers) size the token transformers, and ``patch_size`` is
    ``vit1d``'s patch length in samples; ``patch_stride`` (``vit1d``) pads the signal's end with as
    many repeats of its last sample and starts a patch every ``patch_stride`` samples (overlapping
    patches when smaller than ``patch_size``; TimeDRL's patching). ``patch_size`` also sets a timm ViT's patches,
    ``small_stem`` gives a timm ResNet the CIFAR-style stem, and ``timm_kwargs`` go to
    ``timm.create_model`` (e.g. ``{depth: 4, embed_dim: 96, num_heads: 3}``). A modality registers
    backbones of its own with their keys (``selfsup datasets`` / ``modalities/<name>.py``): for
    videos ``vit3d`` (``patch_size`` and ``tubelet``), ``cnn3d`` and ``video_resnet``."""

    backbone: Literal[tuple(BUILT)] = "cnn"
    embed_dim: int = Field(128, ge=1)
    width: int = Field(32, ge=1)
    depth: int = Field(3, ge=1, le=24)
    heads: int = Field(4, ge=1)
    registers: int = Field(1, ge=0)
    timm_name: str | None = None
    patch_size: int | None = Field(None, ge=1)
    patch_stride: int | None = Field(None, ge=1)
    small_stem: bool = False
    timm_kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> "SharedModel":
        if self.backbone == "timm" and not self.timm_name:
            raise ValueError("model.backbone 'timm' needs model.timm_name (e.g. resnet18, vit_small_patch16_224)")
        if self.backbone in TRANSFORMERS and self.embed_dim % self.heads:
            raise ValueError(f"model.embed_dim {self.embed_dim} must be divisible by model.heads {self.heads}")
        if self.patch_stride is not None and self.backbone != "vit1d":
            raise ValueError(f"model.patch_stride applies to model.backbone vit1d, not {self.backbone!r}")
        return self


ModelConfig = create_model("ModelConfig", __base__=SharedModel, __doc__=SharedModel.__doc__,
                           **{key: field for kind in MODALITIES.values() for key, field in kind.model_fields.items()})
"""The ``model:`` section: the shared keys (:class:`SharedModel`) plus each modality's own
(``Modality.model_fields``, e.g. the video ViT's tubelet length)."""


METHOD_CONFIGS = {name: method.config for name, method in METHODS.items()}
"""Each method's ``method:`` section, from its own file (``methods/<name>.py``)."""
MethodConfig = Annotated[Union[tuple(METHOD_CONFIGS.values())], Field(discriminator="name")]
MASKED = tuple(name for name, method in METHODS.items() if method.masked)
"""Methods that see one view and masks instead of two augmented views."""
MODALITY = {name: (method.modality,) if isinstance(method.modality, str) else method.modality
            for name, method in METHODS.items() if method.modality}
"""Methods made for some kinds of data (their modalities' names); the others take any."""
BACKBONES = {name: modality.backbones for name, modality in MODALITIES.items()}
"""The backbones that take each modality's samples."""
VIEWS = {name: method.recipes for name, method in METHODS.items()}
"""The image recipes each method accepts (each method's ``recipes``), its default first."""


def view_recipes(method: str, modality: str = "image") -> tuple[str, ...]:
    """The recipes ``method`` accepts on ``modality`` data, its default first, as the modality
    says (``Modality.method_recipes``: its own, or for a method that takes any data the modality's
    defaults, ``signal`` on signals, ``scarf`` on tables; images take each method's own)."""
    return MODALITIES[modality].method_recipes(METHODS[method])


def views_of(cfg: "ExperimentConfig") -> str:
    """The recipe a run uses: ``data.views``, or for ``auto`` the method's own on this kind of data."""
    if cfg.data.views != "auto":
        return cfg.data.views
    return view_recipes(cfg.method.name, cfg.data.modality)[0]


class OptimConfig(Section):
    """Optimizer and learning-rate schedule. ``schedule: cosine``: linear warmup over
    ``warmup_epochs``, then cosine to ``min_lr_ratio * lr`` at the end of the run. ``schedule:
    infinite`` (Ibrahim et al. 2024; Singh et al. 2025, for continual SSL): linear warmup, a cosine
    cooldown over ``cooldown_epochs`` to ``constant_lr_ratio * lr``, that constant rate for as long
    as training goes, and over the run's last ``anneal_epochs`` an exponential anneal to
    ``min_lr_ratio * lr`` (0: none, the run ends at the constant rate and ``selfsup train --from``
    can continue it, or anneal it, without warming up again). ``weight_decay_end`` makes the
    weight decay a cosine from ``weight_decay`` to it (DINO, I-JEPA: 0.04 -> 0.4); biases and norm
    weights never decay. ``sgd``: SGD with ``momentum`` (MoCo v2, InterCLR)."""

    name: Literal["adamw", "lars", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    weight_decay_end: float | None = Field(None, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    betas: tuple[float, float] = (0.9, 0.999)
    lars_eta: float = Field(0.02, gt=0.0)
    warmup_epochs: float = Field(1.0, ge=0.0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)
    schedule: Literal["cosine", "infinite"] = "cosine"
    cooldown_epochs: float = Field(0.0, ge=0.0)
    constant_lr_ratio: float = Field(0.1, gt=0.0, le=1.0)
    anneal_epochs: float = Field(0.0, ge=0.0)

    @model_validator(mode="after")
    def _check(self) -> "OptimConfig":
        if self.schedule == "cosine" and (self.cooldown_epochs or self.anneal_epochs):
            raise ValueError("cooldown_epochs and anneal_epochs are phases of schedule: infinite")
        if self.schedule == "infinite" and self.anneal_epochs:
            if not 0 < self.min_lr_ratio <= self.constant_lr_ratio:
                raise ValueError(f"an anneal needs 0 < min_lr_ratio <= constant_lr_ratio ({self.constant_lr_ratio}), got {self.min_lr_ratio}")
        return self


class TrainConfig(Section):
    """Epochs, global batch size, precision, clipping, step speed, checkpoints and fault tolerance.

    ``compile``: run the step through ``torch.compile`` (``auto``: on CUDA workers, where it pays
    for its compile time; a model that cannot compile falls back to eager with a one-line reason),
    with ``compile_backend`` (``inductor``, the default; ``aot_eager`` captures the step and its
    backward graph without generating code, to check a model's capture quickly; any backend of
    ``torch._dynamo.list_backends()``).
    ``channels_last``: NHWC convolutions (``auto``: on CUDA for models with 2-D convolutions).
    ``grad_checkpointing``: recompute transformer blocks in the backward pass instead of storing
    their activations (large ViTs on small GPUs). AdamW is fused on CUDA.
    ``log_every``: the step's logged values stay on the device and are summed there; every
    ``log_every`` steps (and at the end of an epoch) the workers check them once for a non-finite
    loss, so the host waits for the device once per interval, not once per step, and a diverged
    run is caught within that many steps.
    """

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=2)
    precision: Literal["fp32", "bf16"] = "fp32"
    grad_clip: float | None = Field(None, gt=0.0)
    compile: bool | Literal["auto"] = "auto"
    compile_backend: str = "inductor"
    channels_last: bool | Literal["auto"] = "auto"
    grad_checkpointing: bool = False
    log_every: int = Field(50, ge=1)
    max_failures: int = Field(2, ge=0)
    checkpoints_to_keep: int = Field(2, ge=1)
    storage_path: str = "./selfsup-runs"

    @model_validator(mode="after")
    def _backend(self) -> "TrainConfig":
        if self.compile_backend != "inductor":
            from torch._dynamo import list_backends

            known = list_backends(exclude_tags=())
            if self.compile_backend not in known:
                raise ValueError(f"compile_backend: {self.compile_backend!r} is not a torch.compile backend; available: {', '.join(known)}")
        return self


class EvalConfig(Section):
    """Label-free metrics on a fixed evaluation subset of ``subset_size`` training samples (RankMe,
    alpha-ReQ); LiDAR on ``lidar_views`` fixed random views of its first ``lidar_samples`` samples
    (0 turns LiDAR off; the masked methods' views are their own random contexts, and they also log
    ``label_free/lidar_aug``, LiDAR under the modality's augmentation); probes when labels exist, on at most ``probe_size`` train and test samples
    (a fixed seeded subset; all when unset), fitted on the train split and scored on the test split or,
    with ``probe_folds`` >= 2, cross-validated over both (stratified k-fold: every labelled sample
    scored once, for test splits too small to tell close runs apart). With ``collapse_rankme`` set (sweeps set it), a run
    whose backbone RankMe falls below it, or whose loss is not finite, is marked collapsed
    (``collapsed`` = 1 in its last metrics) and stops."""

    subset_size: int = Field(512, ge=2)
    lidar_samples: int = Field(128, ge=0)
    lidar_views: int = Field(8, ge=2)
    collapse_rankme: float | None = Field(None, ge=1.0)

    @model_validator(mode="after")
    def _check(self) -> "EvalConfig":
        if self.lidar_samples == 1:
            raise ValueError("lidar_samples must be 0 (no LiDAR) or at least 2")
        if self.probe_folds == 1:
            raise ValueError("probe_folds must be 0 (the train/test split) or at least 2 (cross-validated over both)")
        return self
    probe_every: int = Field(0, ge=0)
    probe_size: int | None = Field(None, ge=2)
    probe_folds: int = Field(0, ge=0)
    knn_k: int = Field(20, ge=1)


class ScalingConfig(Section):
    """Ray Train workers. ``num_workers`` data-parallel processes, gloo on CPU and nccl on GPU.
    ``strategy``: ``ddp`` (every worker holds the whole model; gradients all-reduced) or ``fsdp``
    (each worker holds ``1/num_workers`` of the weights, gradients and optimizer state, gathered
    one transformer block at a time: models that do not fit DDP, ViT-L/H; see
    ``train/sharding.py``). Checkpoints are the same full state either way.
    ``placement_timeout_s``: how long a run waits for the cluster to place its workers (free CPUs
    and GPUs, or an autoscaler adding nodes) before it fails saying so, where Ray Train would retry
    without end; rounded up to Ray Train's attempts of ``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S``
    (60 s) each.

    ``min_workers`` makes the run elastic (spot clusters): it starts with as many workers as the
    cluster can place, from ``min_workers`` to ``num_workers``, goes on with fewer when nodes are
    lost and grows back when they return (Ray Train's elastic worker group; each change restarts
    the workers from the latest checkpoint and replays that epoch, which is logged once). The
    global batch is kept by recomputing the per-worker batch (``train.batch_size`` / workers), so
    ``train.batch_size`` must divide by every worker count in the range.
    ``resources``: custom Ray resources each worker asks for besides its CPUs (and GPU), e.g.
    ``{trainer: 1}`` to keep workers off the CPU-only nodes that do Ray Data's preprocessing."""

    num_workers: int = Field(1, ge=1)
    min_workers: int | None = Field(None, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0.0)
    resources: dict[str, float] = Field(default_factory=dict)
    strategy: Literal["ddp", "fsdp"] = "ddp"
    placement_timeout_s: float = Field(600.0, gt=0.0)

    @model_validator(mode="after")
    def _check(self) -> "ScalingConfig":
        if self.min_workers is not None and self.min_workers > self.num_workers:
            raise ValueError(f"scaling.min_workers {self.min_workers} exceeds scaling.num_workers {self.num_workers}")
        reserved = {"CPU", "GPU", "memory", "object_store_memory"} & set(self.resources)
        if reserved:
            raise ValueError(f"scaling.resources: {sorted(reserved)[0]} is set by cpus_per_worker / use_gpu, not here")
        return self

    @property
    def worker_counts(self) -> range:
        """Every number of workers the run may have: ``num_workers``, or ``min_workers ..
        num_workers`` for an elastic run."""
        return range(self.min_workers or self.num_workers, self.num_workers + 1)


class TrackingConfig(Section):
    """MLflow store. ``experiment`` defaults to the run (or sweep) name. ``uri``: a local store
    (``sqlite:///FILE``, one machine) or a tracking server (``http://HOST:PORT``, see
    ``selfsup server``). ``artifact_location``: with a local store, where artifacts go (default
    ``./selfsup-artifacts``); with a server, unset: the server proxies them (``mlflow-artifacts:/``).
    ``patience_s``: how long a run or sweep waits out a store it cannot reach (a server restarting),
    retrying every 2 s, before it fails naming the store; nothing it logs is lost or doubled."""

    uri: str = "sqlite:///selfsup-mlflow.db"
    artifact_location: str | None = None
    experiment: str | None = Field(None, min_length=1, pattern=NAME)
    patience_s: float = Field(300.0, gt=0.0)


class ExperimentConfig(Section):
    """One pretraining run: the whole YAML of ``selfsup train``."""

    name: str = Field("selfsup", min_length=1, pattern=NAME)
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=METHOD_CONFIGS["vicreg"])
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _check(self) -> "ExperimentConfig":
        modality, method = self.data.modality, self.method.name
        if self.model.backbone not in BACKBONES[modality]:
            raise ValueError(f"model.backbone {self.model.backbone!r} does not suit {self.data.name!r} data; use one of {', '.join(BACKBONES[modality])}")
        if modality not in MODALITY.get(method, (modality,)):
            suits = sorted(m for m in METHOD_CONFIGS if modality in MODALITY.get(m, (modality,)))
            made_for = " or ".join(MODALITIES[m].plural if m in MODALITIES else m for m in MODALITY[method])
            raise ValueError(f"method {method!r} is for {made_for}, not {self.data.kind.plural}; {self.data.kind.plural} take {', '.join(suits)}")
        for kind in MODALITIES.values():
            for key in kind.model_fields:
                if getattr(self.model, key) != type(self.model).model_fields[key].get_default() and kind is not self.data.kind:
                    raise ValueError(f"model.{key} applies to {kind.plural}, not {self.data.kind.plural}")
        allowed = view_recipes(method, modality)
        if self.data.views not in ("auto", *allowed):
            raise ValueError(f"data.views {self.data.views!r} does not suit method {method!r}; use one of auto, {', '.join(allowed)}")
        spec = METHODS[method]
        if spec.vit and not has_patches(self.model.backbone, self.model.timm_name):
            vits = [b for b in BACKBONES[modality] if b != "timm" and has_patches(b, None)]
            raise ValueError(f"method {method!r} needs a ViT: model.backbone {' or '.join(vits + ['timm with a vit_* model.timm_name'])}")
        if spec.backbones and self.model.backbone not in spec.backbones:
            raise ValueError(f"method {method!r} needs model.backbone {' or '.join(spec.backbones)}, got {self.model.backbone!r}")
        if spec.in_memory and getattr(self.data, "stream", False):
            raise ValueError(f"method {method!r} prepares on the whole training set in memory: set data.stream: false")
        uneven = [w for w in self.scaling.worker_counts if self.train.batch_size % w]
        if uneven and self.scaling.min_workers is None:
            raise ValueError(f"train.batch_size {self.train.batch_size} is not divisible by scaling.num_workers {self.scaling.num_workers}")
        if uneven:
            raise ValueError(f"train.batch_size {self.train.batch_size} is not divisible by {uneven[0]} workers, which the elastic run "
                             f"(scaling.min_workers {self.scaling.min_workers} .. num_workers {self.scaling.num_workers}) may have: "
                             "the global batch is kept by dividing it among the workers")
        return self


class Distribution(Section):
    """One searched hyperparameter: ``loguniform``/``uniform`` (low, high), ``int`` (low, high
    inclusive) or ``choice`` (values)."""

    type: Literal["loguniform", "uniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> "Distribution":
        if self.type == "choice":
            if not self.values:
                raise ValueError("choice needs a non-empty 'values' list")
            bad = [v for v in self.values if not isinstance(v, (str, int, float, bool, type(None)))]
            if bad:
                raise ValueError(f"choice values must be numbers, strings, booleans or null (Optuna's categorical), got {bad[0]!r}")
            return self
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"{self.type} needs low < high, got low={self.low} high={self.high}")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got {self.low}")
        return self

    def examples(self) -> list[Any]:
        """Values at the ends of the range, used to validate the space against the config."""
        if self.type == "choice":
            return list(self.values)
        if self.type == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


class SchedulerConfig(Section):
    """ASHA early stopping on the epoch (``none`` runs every trial to the end). ``grace_period``:
    epochs before a trial can be stopped; unset, half of ``train.epochs``. A fresh network already
    has a high effective rank, so at early rungs RankMe favours trials that have barely trained:
    replayed on the selection benchmark's trials, ASHA on RankMe with a grace of 2 epochs would
    have stopped the label-based best trial in most cells, with half the epochs in few
    (``docs/selection.md``)."""

    type: Literal["asha", "none"] = "asha"
    grace_period: int | None = Field(None, ge=1)
    reduction_factor: float = Field(2.0, gt=1.0)


class SweepConfig(Section):
    """A label-free hyperparameter search: the whole YAML of ``selfsup sweep``.

    ``base`` is an experiment YAML (relative to this file); ``search_space`` a YAML of dotted
    config paths -> distributions, by default ``search_spaces/<method>.yaml``. ``metric`` is Tune's
    objective (default augmentation consistency, the default selection rule's metric, chosen by the
    selection benchmark, docs/selection.md; any ``label_free/...`` metric; ``label_free/rankme`` is
    the RankMe paper's objective, Garrido et al. 2023, ``label_free/lidar`` LiDAR's). A trial whose
    backbone RankMe falls below ``collapse_rankme`` (1.5: one or two directions left), or whose loss
    is not finite, is stopped, recorded as collapsed and told to Optuna as pruned; ``null`` turns
    this off (masked methods on tiny images can sit near 1-2 without having collapsed).
    ``trial_retries``: how often Tune restarts a trial whose function died (its node was lost) or
    whose run failed beyond ``train.max_failures``; it resumes from its last checkpoint. Default 2:
    a lost node can fail a trial twice, once with the node and once more while Ray restarts the
    actors of its own that were there (Train's state actor: "actor is temporarily unavailable").
    ``sampler``: Optuna's TPE (``tpe``, guided by ``metric``) or uniform ``random`` sampling (what
    the selection benchmark uses, so that no selector steers which trials exist). ``registry``: put
    the default rule's pick into the model registry under the sweep's name.
    """

    name: str = Field(min_length=1, pattern=NAME)
    base: str = Field(min_length=1)
    search_space: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    num_samples: int = Field(8, ge=1)
    max_concurrent_trials: int = Field(2, ge=1)
    metric: str = "label_free/aug_consistency"
    mode: Literal["max", "min"] = "max"
    seed: int = 0
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    trial_cpus: float = Field(0.25, gt=0.0)
    collapse_rankme: float | None = Field(1.5, ge=1.0)
    trial_retries: int = Field(2, ge=0)
    sampler: Literal["tpe", "random"] = "tpe"
    registry: bool = True


def _loc(err: dict) -> str:
    """The dotted key of a validation error; a key that is not a plain name is quoted (``'a\\nb'``)."""
    return ".".join(str(p) if re.fullmatch(r"[\w-]+", str(p)) else repr(p) for p in err["loc"] if p not in METHOD_CONFIGS)


def _one_line(source: str, exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    where = _loc(err)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag", err["input"])
        msg = f"unknown method {tag!r}; available: {', '.join(METHOD_CONFIGS)}"
    bad = f" (got {err['input']!r})" if err["type"] not in ("extra_forbidden", "missing") and not isinstance(err.get("input"), dict) else ""
    return ConfigError(f"{source}: {where or '<top>'}: {msg}{bad}")


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, raising :class:`ConfigError` naming the file on any problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:  # a folder, unreadable, not text
        raise ConfigError(f"{path}: cannot be read as YAML ({type(exc).__name__}: {getattr(exc, 'strerror', None) or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def parse_value(text: str) -> Any:
    """A ``--set`` value parsed as YAML (``3``, ``1e-3``, ``true``, ``[1, 2]``), else a string."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def set_path(tree: dict, dotted: str, value: Any, source: str = "--set") -> None:
    """Set ``tree[a][b][c] = value`` for ``dotted = 'a.b.c'``, creating sections as needed."""
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError(f"{source}: {dotted!r}: empty key in path")
    node = tree
    for i, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {'.'.join(keys[: i + 1])}: is a value, not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(tree: dict, overrides: dict[str, Any], source: str = "--set") -> dict:
    """Return a deep copy of ``tree`` with dotted-path overrides applied."""
    out = yaml.safe_load(yaml.safe_dump(tree))
    for dotted, value in overrides.items():
        set_path(out, dotted, value, source)
    return out


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", ...]`` -> ``{"a.b": 1, ...}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set: {item!r}: expected key.path=value")
        out[key.strip()] = parse_value(value)
    return out


def build_experiment(tree: dict, source: str) -> ExperimentConfig:
    """Validate a raw mapping into an :class:`ExperimentConfig`, errors naming ``source``."""
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as exc:
        raise _one_line(source, exc) from None


def load_experiment(path: str | Path, sets: list[str] | None = None) -> ExperimentConfig:
    """Load an experiment YAML with ``--set`` overrides applied."""
    tree = apply_overrides(read_yaml(path), parse_sets(sets or []))
    return build_experiment(tree, str(path))


def load_sweep(path: str | Path, sets: list[str] | None = None) -> SweepConfig:
    """Load a sweep YAML; ``base`` and ``search_space`` are resolved relative to it."""
    path = Path(path)
    tree = apply_overrides(read_yaml(path), parse_sets(sets or []))
    try:
        sweep = SweepConfig.model_validate(tree)
    except ValidationError as exc:
        raise _one_line(str(path), exc) from None
    sweep.base = str((path.parent / sweep.base).resolve())
    if sweep.search_space is not None:
        sweep.search_space = str((path.parent / sweep.search_space).resolve())
    return sweep


def load_space(path: str | Path) -> dict[str, Distribution]:
    """Load a search-space YAML: dotted config path -> :class:`Distribution`."""
    raw = read_yaml(path)
    space = {}
    for key, spec in raw.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: {key}: expected a mapping with 'type', got {spec!r}")
        try:
            space[key] = Distribution.model_validate(spec)
        except ValidationError as exc:
            err = _one_line(str(path), exc)
            raise ConfigError(str(err).replace(f"{path}: ", f"{path}: {key}.", 1)) from None
    if not space:
        raise ConfigError(f"{path}: search space is empty")
    return space


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{"a.b.c": value}`` (lists kept as values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


LOCAL_ARTIFACTS = "./selfsup-artifacts"
"""Artifacts of a local (sqlite) store unless ``tracking.artifact_location`` says otherwise."""


def is_server(uri: str) -> bool:
    """A tracking URI served over the network (``http(s)://``, ``databricks``), not a local store."""
    return uri.split(":", 1)[0] in ("http", "https", "databricks")


def resolve_paths(cfg: ExperimentConfig, base: Path | None = None) -> ExperimentConfig:
    """Make local storage and data paths absolute (Ray workers run in another directory); the
    ``data.path`` of a bundled set (a dataset whose ``path`` is a ``name``) stays as it is."""
    base = base or Path.cwd()
    cfg = cfg.model_copy(deep=True)
    if "://" not in cfg.train.storage_path:
        cfg.train.storage_path = str((base / cfg.train.storage_path).resolve())
    if cfg.tracking.uri.startswith("sqlite:///") and not cfg.tracking.uri.startswith("sqlite:////"):
        cfg.tracking.uri = "sqlite:///" + str((base / cfg.tracking.uri[len("sqlite:///"):]).resolve())
    if cfg.tracking.artifact_location is None and not is_server(cfg.tracking.uri):
        cfg.tracking.artifact_location = LOCAL_ARTIFACTS
    if cfg.tracking.artifact_location and "://" not in cfg.tracking.artifact_location:
        cfg.tracking.artifact_location = str((base / cfg.tracking.artifact_location).resolve())
    if cfg.data.path and "://" not in cfg.data.path and dataset(cfg.data.name).path == "file":
        cfg.data.path = str((base / cfg.data.path).resolve())
    if cfg.data.labels and "://" not in cfg.data.labels:
        cfg.data.labels = str((base / cfg.data.labels).resolve())
    return cfg
