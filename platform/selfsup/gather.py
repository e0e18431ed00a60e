"""All-gather across data-parallel workers with gradients flowing back to each worker's own slice.

Forward: every worker receives the concatenation ``(W * B, ...)`` of all workers' ``(B, ...)``
tensors. Backward: the gradients of all workers' losses with respect to the gathered tensor are
summed (all-reduce) and each worker keeps the slice of its own inputs. With DDP averaging the
parameter gradients over ``W`` workers, this gives exactly the gradient of the global-batch loss
when each worker's loss is the mean over its local anchors (SimCLR) or the loss of the whole
gathered batch (VICReg). Without an initialised process group it is the identity.

Below the metrics and the methods (DESIGN.md, layer 1): the methods gather their batches with it,
and the metric panel shards its evaluation by :func:`world`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``(B, ...)`` on each worker -> ``(W * B, ...)`` in rank order, differentiable."""
    if world()[1] == 1:
        return x
    return _GatherWithGrad.apply(x)
