"""Per-epoch evaluation: label-free metrics on a fixed subset, probes when labels exist.

Inputs are sharded across data-parallel workers (rank ``r`` of ``W`` embeds rows ``r::W``); the
embeddings are gathered so that metrics are computed on the whole subset, on rank 0, and the
result is broadcast so every worker reports the same numbers. Metric names follow DESIGN.md.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from selfsup.methods.base import Method
from selfsup.methods.gather import world
from selfsup.metrics.probes import knn_probe, linear_probe
from selfsup.metrics.rankme import rankme


def _embed(fn, x: torch.Tensor, device, batch_size: int = 1024) -> np.ndarray:
    with torch.no_grad():
        out = [fn(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def gather_rows(local: np.ndarray, n: int) -> np.ndarray:
    """Undo the ``r::W`` sharding: gather every worker's rows and put them back in order ``(n, D)``."""
    rank, size = world()
    if size == 1:
        return local
    parts: list = [None] * size
    dist.all_gather_object(parts, local)
    out = np.empty((n, parts[0].shape[1]), dtype=parts[0].dtype)
    for r, part in enumerate(parts):
        out[r::size] = part
    return out


def embed_all(fn, x: torch.Tensor, device) -> np.ndarray:
    """Apply ``fn`` to ``x`` sharded across workers; every worker gets the full ``(N, D)`` result."""
    rank, size = world()
    return gather_rows(_embed(fn, x[rank::size], device), len(x))


def evaluate(
    method: Method,
    eval_x: torch.Tensor,
    device,
    probe: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    knn_k: int = 20,
) -> dict[str, float]:
    """``label_free/rankme`` (backbone) and ``label_free/rankme_projector`` on ``eval_x``
    ``(N, C, H, W)``; ``probe/linear_acc`` and ``probe/knn_acc`` when ``probe = (x_train,
    y_train, x_test, y_test)`` is given. Call on every worker; all get the same dict."""
    was_training = method.training
    method.eval()
    try:
        z = embed_all(method.embed, eval_x, device)
        p = embed_all(method.project, eval_x, device)
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
        if feats is not None:
            result["probe/linear_acc"] = linear_probe(*feats)
            result["probe/knn_acc"] = knn_probe(*feats, k=knn_k)
    if size > 1:
        box = [result]
        dist.broadcast_object_list(box, src=0)
        result = box[0]
    return result
