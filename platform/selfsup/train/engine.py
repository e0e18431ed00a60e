"""The pure-PyTorch training engine: optimizer, schedule, precision, clipping, the methods'
after-step updates (their EMA: ``methods/ema.py``), exact resume, and the options that make a GPU
step fast (``torch.compile`` with an eager fallback, fused AdamW, channels-last convolutions).

No Ray and no MLflow here: the same :class:`Engine` step runs in a unit test, a GPU benchmark and
inside a Ray Train worker.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from typing import Callable

import torch
from torch import nn

from selfsup.errors import one_line
from selfsup.train import sharding


class LARS(torch.optim.Optimizer):
    """SGD with momentum and Layer-wise Adaptive Rate Scaling (You, Gitman & Ginsburg, 2017).

    https://arxiv.org/abs/1708.03888. For a parameter ``w`` with gradient ``g`` and weight decay
    ``wd``: ``g <- g + wd * w``; ``trust = eta * ||w|| / ||g||`` (1 when either norm is 0);
    ``v <- momentum * v + trust * g``; ``w <- w - lr * v``. Groups with ``lars=False`` (biases and
    normalisation weights, as in BYOL/VICReg) skip both weight decay and the trust ratio.

    ``foreach`` steps each group with ``torch._foreach`` kernels, a few launches per group instead
    of several per parameter (a ResNet-50 has 161); ``None``: when the parameters are on CUDA (on
    the CPU the per-parameter loop is faster: 44 vs 114 ms per ResNet-50 step on 2 cores).
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, eta: float = 0.02, foreach: bool | None = None):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, lars=True))
        self.foreach = foreach

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            mus = []
            for p in params:
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mus.append(state["mu"])
            foreach = self.foreach if self.foreach is not None else params[0].is_cuda
            (self._step_foreach if foreach else self._step_loop)(group, params, mus)
        return loss

    @staticmethod
    def _trust(w_norm: torch.Tensor, g_norm: torch.Tensor, eta: float) -> torch.Tensor:
        return torch.where((w_norm > 0) & (g_norm > 0), eta * w_norm / g_norm, torch.ones_like(w_norm))

    def _step_loop(self, group: dict, params: list[torch.Tensor], mus: list[torch.Tensor]) -> None:
        for p, mu in zip(params, mus):
            g = p.grad
            if group["lars"]:
                g = g.add(p, alpha=group["weight_decay"])
                g = g.mul(self._trust(torch.norm(p), torch.norm(g), group["eta"]))
            mu.mul_(group["momentum"]).add_(g)
            p.add_(mu, alpha=-group["lr"])

    def _step_foreach(self, group: dict, params: list[torch.Tensor], mus: list[torch.Tensor]) -> None:
        grads = [p.grad for p in params]
        if group["lars"]:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            trust = self._trust(torch.stack(torch._foreach_norm(params)), torch.stack(torch._foreach_norm(grads)), group["eta"])
            grads = torch._foreach_mul(grads, list(trust.unbind()))
        torch._foreach_mul_(mus, group["momentum"])
        torch._foreach_add_(mus, grads)
        torch._foreach_add_(params, mus, alpha=-group["lr"])


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights of rank >= 2 get weight decay (and LARS); biases and norms do not."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars": True},
        {"params": no_decay, "weight_decay": 0.0, "lars": False},
    ]


def build_optimizer(
    model: nn.Module,
    name: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    lars_eta: float = 0.02,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """AdamW, LARS or SGD with momentum (MoCo v2's, InterCLR's) over :func:`param_groups` of
    ``model``. AdamW is ``fused`` (one kernel for all parameters) by default when every parameter is
    on a CUDA device."""
    groups = param_groups(model, weight_decay)
    if name == "sgd":
        for g in groups:
            g.pop("lars")
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        for g in groups:
            g.pop("lars")
        if fused is None:
            fused = all(p.is_cuda for g in groups for p in g["params"])
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=fused or None)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, eta=lars_eta)
    raise ValueError(f"unknown optimizer {name!r}; available: adamw, lars, sgd")


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Linear warmup from ~0 to 1 over ``warmup_steps``, then cosine decay to ``min_ratio`` at
    ``total_steps`` (SGDR without restarts, Loshchilov & Hutter 2017)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def infinite_lr_factor(
    step: int,
    warmup_steps: int,
    cooldown_steps: int,
    constant_ratio: float,
    anneal_start: int | None = None,
    anneal_steps: int = 0,
    min_ratio: float = 0.0,
) -> float:
    """The infinite learning-rate schedule (Ibrahim et al. 2024, https://arxiv.org/abs/2403.08763,
    sec. 7; for continual self-supervised pretraining, Singh et al. 2025,
    https://arxiv.org/abs/2503.02844, eq. 1), as a factor of the peak rate ``eta_max``:

    - warmup, ``step < W``: linear to 1 (``(step + 1) / W``);
    - cooldown, ``W <= step < W + C``: ``r + (1 - r) (1 + cos(pi (step - W) / C)) / 2`` down to
      ``r = eta_const / eta_max``;
    - constant, for as long as training goes: ``r``;
    - annealing, from step ``anneal_start`` for ``anneal_steps`` steps:
      ``f0 (m / f0) ** ((step - anneal_start + 1) / anneal_steps)``, exponential from ``f0`` (the
      factor at ``anneal_start``, ``r`` once the cooldown is over) to ``m = eta_min / eta_max``,
      which the annealing's last step uses.

    No step depends on a planned end of training except the annealing, which can start at any
    step: a checkpoint taken in the constant phase can be annealed, or trained on further.
    """
    if anneal_steps > 0 and anneal_start is not None and step >= anneal_start:
        f0 = infinite_lr_factor(anneal_start, warmup_steps, cooldown_steps, constant_ratio)
        return f0 * (min_ratio / f0) ** min(1.0, (step - anneal_start + 1) / anneal_steps)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if step < warmup_steps + cooldown_steps:
        t = (step - warmup_steps) / cooldown_steps
        return constant_ratio + (1 - constant_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return constant_ratio


def cosine_value(start: float, end: float, progress: float) -> float:
    """``end + (start - end) (1 + cos(pi progress)) / 2``: ``start`` at 0, ``end`` at 1 (DINO's
    ``cosine_scheduler``, used for its and I-JEPA's weight decay 0.04 -> 0.4)."""
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def has_conv2d(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def to_channels_last(module: nn.Module) -> nn.Module:
    """Store the 4-D weights of ``module`` channels-last (NHWC), the layout cuDNN's tensor-core
    convolutions use without transposing; call before wrapping the module in DDP."""
    return module.to(memory_format=torch.channels_last)


log = logging.getLogger(__name__)


class Engine:
    """Runs optimisation steps of a method.

    ``model`` is what forward is called on (the method, or its DDP wrapper); ``method`` the
    unwrapped method, whose ``after_step(progress)`` runs after each step (``progress =
    step / total_steps``). The learning rate of each group is ``base_lr * lr_factor(step)`` (or
    ``base_lr * lr_schedule(step)``, e.g. :func:`infinite_lr_factor`), set before the step; with ``weight_decay_end``
    the weight decay of every decayed group follows a cosine from its base value to it.

    With ``compile`` the forward and backward run through ``torch.compile(model)`` (TorchDynamo
    and Inductor, or ``compile_backend``). A model that cannot be compiled does not stop the run:
    the failing step is redone eagerly, every later step runs eagerly, and ``compile_fallback``
    holds the one-line reason (also logged as a warning). An error the eager step raises too is
    the model's own and propagates. With ``channels_last`` 4-D inputs are moved to the device in
    that layout (convert the model with :func:`to_channels_last`).

    A method sharded by :func:`selfsup.train.sharding.shard` (FSDP) is both ``model`` and
    ``method``; its :meth:`state_dict` is then the full state on rank 0 (a collective: call it on
    every rank) and :meth:`load_state_dict` shards rank 0's full state again.
    """

    def __init__(
        self,
        model: nn.Module,
        method: nn.Module,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        precision: str = "fp32",
        grad_clip: float | None = None,
        device: torch.device | str = "cpu",
        weight_decay_end: float | None = None,
        compile: bool = False,
        compile_backend: str | object = "inductor",
        channels_last: bool = False,
        lr_schedule: Callable[[int], float] | None = None,
    ):
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"unknown precision {precision!r}; available: fp32, bf16")
        self.model, self.method, self.optimizer = model, method, optimizer
        self.total_steps, self.warmup_steps, self.min_lr_ratio = total_steps, warmup_steps, min_lr_ratio
        self.lr_schedule = lr_schedule
        self.precision, self.grad_clip = precision, grad_clip
        self.device = torch.device(device)
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.base_wds = [g.get("weight_decay", 0.0) for g in optimizer.param_groups]
        self.weight_decay_end = weight_decay_end
        self.step_count = 0
        self.channels_last = channels_last
        self.compiled = torch.compile(model, backend=compile_backend) if compile else None
        self.compile_fallback: str | None = None
        self.sharded = sharding.is_sharded(method)

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _to_device(self, batch):
        if isinstance(batch, torch.Tensor):
            if self.channels_last and batch.ndim == 4:
                return batch.to(self.device, non_blocking=True, memory_format=torch.channels_last)
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, dict):
            return {k: self._to_device(v) for k, v in batch.items()}
        if isinstance(batch, (list, tuple)):
            return type(batch)(self._to_device(v) for v in batch)
        return batch

    def train_step(self, batch, sync: bool = True) -> dict[str, float]:
        """One optimisation step; returns the method's scalars plus ``lr`` (and ``grad_norm``
        when clipping). ``sync=False`` leaves them as 0-dim tensors on the device (``lr`` stays a
        float): reading a value makes the host wait for the device, which a GPU pipeline should do
        once per logging interval, not once per step."""
        if self.lr_schedule is not None:
            factor = self.lr_schedule(self.step_count)
        else:
            factor = lr_factor(self.step_count, self.total_steps, self.warmup_steps, self.min_lr_ratio)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
        if self.weight_decay_end is not None:
            progress = self.step_count / max(1, self.total_steps)
            for group, base in zip(self.optimizer.param_groups, self.base_wds):
                if base > 0:
                    group["weight_decay"] = cosine_value(base, self.weight_decay_end, progress)
        self.model.train()
        batch = self._to_device(batch)
        if self.compiled is not None:
            try:
                out = self._forward_backward(self.compiled, batch)
            except Exception as exc:  # noqa: BLE001  (any compiler failure; the eager step below re-raises the model's own errors)
                self.compiled, self.compile_fallback = None, one_line(exc)
                log.warning("torch.compile failed, running eagerly: %s", self.compile_fallback)
        if self.compiled is None:
            out = self._forward_backward(self.model, batch)
        logs = {k: v.detach() for k, v in out.items()}
        if self.grad_clip is not None:
            logs["grad_norm"] = sharding.local(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)).detach()
        if sync:
            logs = {k: float(v) for k, v in logs.items()}
        self.optimizer.step()
        self.step_count += 1
        self.method.after_step(min(1.0, self.step_count / max(1, self.total_steps)))
        logs["lr"] = self.base_lrs[0] * factor
        return logs

    def _forward_backward(self, model, batch) -> dict[str, torch.Tensor]:
        with self.autocast():
            out = model(batch)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        return out

    def state_dict(self) -> dict:
        if self.sharded:
            weights, optim_state = sharding.full_state(self.method, self.optimizer)
        else:
            weights, optim_state = self.method.state_dict(), self.optimizer.state_dict()
        return {"method": weights, "optimizer": optim_state, "step": self.step_count}

    def load_state_dict(self, state: dict | None) -> None:
        """Load a state of :meth:`state_dict` (read onto the CPU). Sharded: rank 0 passes it and the
        other ranks ``None`` (:func:`selfsup.train.sharding.load_full_state`; a collective)."""
        if self.sharded:
            self.step_count = sharding.load_full_state(self.method, self.optimizer, state)
            return
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count = state["step"]

