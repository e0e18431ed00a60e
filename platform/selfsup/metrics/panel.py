"""Per-epoch evaluation: label-free metrics on a fixed subset (RankMe, alpha-ReQ, intrinsic
dimensions, cluster learnability, DSE of patch tokens; LiDAR and augmentation consistency on fixed
augmented views), probes when labels exist.

Inputs are sharded across data-parallel workers (rank ``r`` of ``W`` embeds rows ``r::W``, padded
to ``ceil(N / W)`` rows so that every rank makes the same forward calls: under FSDP each forward
is a collective, and a rank with one call fewer would leave the others waiting); the embeddings
are gathered so that metrics are computed on the whole subset, on rank 0, and the result is
broadcast so every worker reports the same numbers. Metric names follow DESIGN.md.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from selfsup.gather import world
from selfsup.metrics.alphareq import alpha_req
from selfsup.metrics.consistency import augmentation_consistency
from selfsup.metrics.dense import dse
from selfsup.metrics.dimension import PANEL_POINTS, mst_dimension, two_nn
from selfsup.metrics.learnability import cluster_learnability
from selfsup.metrics.lidar import lidar
from selfsup.metrics.probes import cross_validated, knn_probe, linear_probe
from selfsup.metrics.rankme import rankme


def _embed(fn, x: torch.Tensor, device, batch_size: int = 1024) -> np.ndarray:
    with torch.no_grad():
        out = [fn(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def gather_rows(local: np.ndarray, n: int) -> np.ndarray:
    """Undo the ``r::W`` sharding: gather every worker's rows and put them back in order ``(n, ...)``."""
    rank, size = world()
    if size == 1:
        return local
    parts: list = [None] * size
    dist.all_gather_object(parts, local)
    out = np.empty((n, *parts[0].shape[1:]), dtype=parts[0].dtype)
    for r, part in enumerate(parts):
        out[r::size] = part
    return out


def shard_rows(n: int, rank: int, size: int) -> tuple[torch.Tensor, int]:
    """``(rows, kept)``: rank ``rank``'s rows ``rank::size`` of ``n``, padded with repeats of one of
    them to ``ceil(n / size)`` on every rank; the first ``kept`` are its own."""
    rows = torch.arange(rank, n, size)
    per = -(-n // size)
    pad = rows.new_full((per - len(rows),), int(rows[-1]) if len(rows) else 0)
    return torch.cat([rows, pad]), len(rows)


def embed_all(fn, x: torch.Tensor, device) -> np.ndarray:
    """Apply ``fn`` to ``x`` sharded across workers; every worker gets the full ``(N, D)`` result
    and makes the same calls of ``fn`` (its shard padded: :func:`shard_rows`)."""
    rank, size = world()
    if size == 1:
        return _embed(fn, x, device)
    rows, kept = shard_rows(len(x), rank, size)
    return gather_rows(_embed(fn, x[rows], device)[:kept], len(x))


def singular_values(z: np.ndarray) -> list[float]:
    """Singular values of embeddings ``(N, D)``, largest first (what RankMe is computed from)."""
    return torch.linalg.svdvals(torch.from_numpy(z).to(torch.float64)).tolist()


DSE_SAMPLES = 16
"""Samples whose patch tokens enter the panel's DSE: two of its groups of 8 (1.5 s on one CPU core
for ViT-S/16's 196 tokens of 384)."""

LIDAR_SEED = 20231206
"""Seed of the LiDAR views and masks: the same views every epoch, so the curve tracks the model."""


def lidar_views(view: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, q: int) -> torch.Tensor:
    """``q`` random views of each of the ``n`` samples ``x``, kept grouped by sample: ``(n * q, ...)``
    with rows ``i * q .. i * q + q - 1`` the views of sample ``i``. Seeded with :data:`LIDAR_SEED`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(LIDAR_SEED)
        return torch.stack([view(x) for _ in range(q)], dim=1).flatten(0, 1)


def evaluate(
    method: nn.Module,
    eval_x: torch.Tensor,
    device,
    probe: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    knn_k: int = 20,
    lidar_x: torch.Tensor | None = None,
    view: Callable[[torch.Tensor], torch.Tensor] | None = None,
    lidar_q: int = 8,
    aug_view: Callable[[torch.Tensor], torch.Tensor] | None = None,
    probe_folds: int = 0,
) -> dict[str, float]:
    """The metric panel of ``method`` (a ``methods.base.Method``: its ``embed``, ``project``,
    ``view_embed``, ``patch_tokens`` and ``label_free_metrics``; typed as a module, the metrics being
    a layer below the methods). On ``eval_x`` ``(N, ...)``: ``label_free/rankme`` (backbone),
    ``label_free/rankme_projector``, ``label_free/alpha_req``; the intrinsic dimensions
    ``label_free/twonn_id`` and ``label_free/mst_id`` and ``label_free/cluster_learnability`` of the
    backbone embedding of its first ``dimension.PANEL_POINTS`` samples; ``label_free/dse`` of the
    patch tokens of its first :data:`DSE_SAMPLES` when the backbone is a token encoder
    (``Method.has_patch_tokens``). With ``lidar_x`` ``(n, ...)`` and ``view`` (one random view of a
    batch): ``label_free/lidar`` of ``lidar_q`` views per sample (``Method.view_embed``) and
    ``label_free/aug_consistency`` of the same views; with ``aug_view`` too,
    ``label_free/lidar_aug``: LiDAR of the backbone embedding (``Method.embed``) of ``lidar_q``
    augmented views per sample (the masked methods' LiDAR under augmentations instead of their own
    contexts). ``probe/linear_acc``, ``probe/knn_acc`` and ``probe/test_size`` (test samples) when
    ``probe = (x_train, y_train, x_test, y_test)`` is given: fitted on the train split and scored on
    the test split, or with ``probe_folds`` >= 2 cross-validated over both splits pooled
    (``probes.cross_validated``; ``probe/test_size`` is then every labelled sample). Call on every
    worker; all get the same dict."""
    was_training = method.training
    method.eval()
    try:
        z = embed_all(method.embed, eval_x, device)
        p = embed_all(method.project, eval_x, device)
        zl = za = None
        if lidar_x is not None and view is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(LIDAR_SEED)  # the masked methods' context masks, too
                zl = embed_all(method.view_embed, lidar_views(view, lidar_x, lidar_q), device)
                if aug_view is not None:
                    za = embed_all(method.embed, lidar_views(aug_view, lidar_x, lidar_q), device)
        zt = embed_all(method.patch_tokens, eval_x[:DSE_SAMPLES], device) if method.has_patch_tokens else None
        extra = method.label_free_metrics(eval_x.to(device))
        feats = None
        if probe is not None:
            x_tr, y_tr, x_te, y_te = probe
            feats = (embed_all(method.embed, x_tr, device), y_tr.numpy(), embed_all(method.embed, x_te, device), y_te.numpy())
    finally:
        method.train(was_training)
    rank, size = world()
    result: dict[str, float] = {}
    if rank == 0:
        result["label_free/rankme"] = rankme(torch.from_numpy(z))
        result["label_free/rankme_projector"] = rankme(torch.from_numpy(p))
        result["label_free/alpha_req"] = alpha_req(torch.from_numpy(z))
        result["label_free/twonn_id"] = two_nn(torch.from_numpy(z[:PANEL_POINTS]))
        result["label_free/mst_id"] = mst_dimension(torch.from_numpy(z[:PANEL_POINTS]))
        result["label_free/cluster_learnability"] = cluster_learnability(torch.from_numpy(z[:PANEL_POINTS]))
        if zt is not None:
            result["label_free/dse"] = dse(torch.from_numpy(zt))
        if zl is not None:
            result["label_free/lidar"] = lidar(torch.from_numpy(zl).reshape(len(lidar_x), lidar_q, -1))
            result["label_free/aug_consistency"] = augmentation_consistency(torch.from_numpy(zl).reshape(len(lidar_x), lidar_q, -1))
        if za is not None:
            result["label_free/lidar_aug"] = lidar(torch.from_numpy(za).reshape(len(lidar_x), lidar_q, -1))
        result.update(extra)
        if feats is not None and probe_folds >= 2:
            x, y = np.concatenate([feats[0], feats[2]]), np.concatenate([feats[1], feats[3]])
            result["probe/linear_acc"] = cross_validated(linear_probe, x, y, probe_folds)
            result["probe/knn_acc"] = cross_validated(lambda *f: knn_probe(*f, k=knn_k), x, y, probe_folds)
            result["probe/test_size"] = float(len(y))
        elif feats is not None:
            result["probe/linear_acc"] = linear_probe(*feats)
            result["probe/knn_acc"] = knn_probe(*feats, k=knn_k)
            result["probe/test_size"] = float(len(feats[3]))
    if size > 1:
        box = [result]
        dist.broadcast_object_list(box, src=0)
        result = box[0]
    return result
