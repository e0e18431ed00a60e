"""Fully sharded data parallelism for models that do not fit DDP (ViT-L/H): ``scaling.strategy: fsdp``.

FSDP (Zhao et al. 2023, "PyTorch FSDP", https://arxiv.org/abs/2304.11277) through PyTorch's
per-parameter ``fully_shard`` (FSDP2): every worker keeps ``1/W`` of each parameter, of its
gradient and of its optimizer state; a group of parameters is all-gathered just before the module
that owns it runs and freed after, gradients are reduce-scattered. Groups: each transformer block
(every ``blocks`` stack: the timm ViTs, the token transformers, the JEPA predictors and MAE's
decoder), then everything else as one root group. The EMA copies (BYOL's target, DINO's teacher,
the JEPAs' target encoders) are sharded the same way as the online networks they follow, so an
EMA update is a local operation on matching shards. A model without transformer blocks (the
CNNs) is one group: its parameters are gathered whole for each step, but gradients and optimizer
state stay sharded.

Checkpoints hold the full, unsharded state (gathered to rank 0's CPU, the same files as a DDP
run's ``method`` weights, so ``selfsup export`` and the registry read them unchanged); resuming
reads one on rank 0's CPU and broadcasts it a tensor at a time into every rank's shards. No Ray
and no MLflow here.
"""

from __future__ import annotations

import torch
from torch import nn

FORWARD_METHODS = ("embed", "project", "view_embed", "patch_tokens", "label_free_metrics")
"""The method entry points besides ``forward`` that run the network (the metric panel's): each
gathers the root group's parameters like ``forward`` does."""


def shard(method: nn.Module, mesh=None) -> nn.Module:
    """Shard ``method`` (on its device) in place over ``mesh`` (default: every worker of the
    default process group) and return it; :func:`block_groups` says how many groups it has."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    blocks = [b for m in method.modules() if isinstance(getattr(m, "blocks", None), (nn.Sequential, nn.ModuleList)) for b in m.blocks]
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(method, mesh=mesh)
    for name in FORWARD_METHODS:
        if hasattr(method, name):
            register_fsdp_forward_method(method, name)
    return method


def block_groups(method: nn.Module) -> int:
    """How many transformer blocks of a sharded ``method`` are groups of their own."""
    from torch.distributed.fsdp import FSDPModule

    return sum(isinstance(m, FSDPModule) for m in method.modules()) - 1


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def local(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself, or the whole value of a distributed tensor (a collective: call on every rank)."""
    from torch.distributed.tensor import DTensor

    return x.full_tensor() if isinstance(x, DTensor) else x


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_state(method: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """``(weights, optimizer state)`` unsharded on the CPU, the optimizer state keyed by parameter
    name (a collective: call on every rank; rank 0 gets the state, the others empty dicts)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    return get_state_dict(method, optimizer, options=_options(cpu_offload=True))


def load_full_state(method: nn.Module, optimizer: torch.optim.Optimizer, state: dict | None) -> int:
    """Shard the full state of :func:`full_state` (``{"method", "optimizer", "step"}``, on the CPU)
    into ``method`` and ``optimizer``; returns the step. Rank 0 passes the state, the other ranks
    ``None``: rank 0 broadcasts it one tensor at a time and each rank keeps its shard, so no rank
    but rank 0 ever holds the full state, and no device more than a shard and one tensor (a
    collective: call on every rank). A parameter without optimizer state (one no step has updated
    yet, like DINO's frozen prototypes) is left without: ``set_state_dict`` creates every state with
    a step of zero gradients first, which with weight decay is not a zero state (LARS's momentum).
    The weights must match exactly."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    rank0 = dist.get_rank() == 0
    box = [(sorted(state["optimizer"]["state"]), state["step"]) if rank0 else None]
    dist.broadcast_object_list(box, src=0)
    with_state, step = box[0]
    weights, optim_state = (state["method"], state["optimizer"]) if rank0 else ({}, {})
    options = _options(strict=False, broadcast_from_rank0=True)
    # two calls: set_state_dict takes an empty model state (the other ranks') for "optimizer only"
    set_optimizer_state_dict(method, optimizer, optim_state, options=options)
    keys = set_model_state_dict(method, weights, options=options)
    if keys.missing_keys or keys.unexpected_keys:
        raise KeyError(f"the checkpoint's weights do not fit the model: missing {keys.missing_keys}, unexpected {keys.unexpected_keys}")
    for name, p in method.named_parameters():
        if name not in with_state:
            optimizer.state.pop(p, None)
    return step
