"""The pure-PyTorch training engine: optimizer, schedule, precision, clipping, EMA, exact resume.

No Ray and no MLflow here: the same :class:`Engine` step runs in a unit test, a GPU benchmark and
inside a Ray Train worker.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """SGD with momentum and Layer-wise Adaptive Rate Scaling (You, Gitman & Ginsburg, 2017).

    https://arxiv.org/abs/1708.03888. For a parameter ``w`` with gradient ``g`` and weight decay
    ``wd``: ``g <- g + wd * w``; ``trust = eta * ||w|| / ||g||`` (1 when either norm is 0);
    ``v <- momentum * v + trust * g``; ``w <- w - lr * v``. Groups with ``lars=False`` (biases and
    normalisation weights, as in BYOL/VICReg) skip both weight decay and the trust ratio.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, eta: float = 0.02):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, lars=True))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["lars"]:
                    g = g.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.norm(p), torch.norm(g)
                    trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, torch.ones_like(w_norm))
                    g = g.mul(trust)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(group["momentum"]).add_(g)
                p.add_(mu, alpha=-group["lr"])
        return loss


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
) -> torch.optim.Optimizer:
    """AdamW or LARS over :func:`param_groups` of ``model``."""
    groups = param_groups(model, weight_decay)
    if name == "adamw":
        for g in groups:
            g.pop("lars")
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, eta=lars_eta)
    raise ValueError(f"unknown optimizer {name!r}; available: adamw, lars")


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Linear warmup from ~0 to 1 over ``warmup_steps``, then cosine decay to ``min_ratio`` at
    ``total_steps`` (SGDR without restarts, Loshchilov & Hutter 2017)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target <- momentum * target + (1 - momentum) * online`` for parameters; buffers copied."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)


def cosine_momentum(base: float, progress: float) -> float:
    """EMA rate rising from ``base`` at progress 0 to 1 at progress 1:
    ``1 - (1 - base) (cos(pi progress) + 1) / 2`` (BYOL sec. 3.2, MoCo v3 sec. 4)."""
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2


def cosine_value(start: float, end: float, progress: float) -> float:
    """``end + (start - end) (1 + cos(pi progress)) / 2``: ``start`` at 0, ``end`` at 1 (DINO's
    ``cosine_scheduler``, used for its and I-JEPA's weight decay 0.04 -> 0.4)."""
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class Engine:
    """Runs optimisation steps of a method.

    ``model`` is what forward is called on (the method, or its DDP wrapper); ``method`` the
    unwrapped method, whose ``after_step(progress)`` runs after each step. The learning rate of
    each group is ``base_lr * lr_factor(step)``, set before the step; with ``weight_decay_end``
    the weight decay of every decayed group follows a cosine from its base value to it.
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
    ):
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"unknown precision {precision!r}; available: fp32, bf16")
        self.model, self.method, self.optimizer = model, method, optimizer
        self.total_steps, self.warmup_steps, self.min_lr_ratio = total_steps, warmup_steps, min_lr_ratio
        self.precision, self.grad_clip = precision, grad_clip
        self.device = torch.device(device)
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.base_wds = [g.get("weight_decay", 0.0) for g in optimizer.param_groups]
        self.weight_decay_end = weight_decay_end
        self.step_count = 0

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _to_device(self, batch):
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, dict):
            return {k: self._to_device(v) for k, v in batch.items()}
        if isinstance(batch, (list, tuple)):
            return type(batch)(self._to_device(v) for v in batch)
        return batch

    def train_step(self, batch) -> dict[str, float]:
        """One optimisation step; returns the method's scalars plus ``lr`` (and ``grad_norm``
        when clipping)."""
        factor = lr_factor(self.step_count, self.total_steps, self.warmup_steps, self.min_lr_ratio)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
        if self.weight_decay_end is not None:
            progress = self.step_count / max(1, self.total_steps)
            for group, base in zip(self.optimizer.param_groups, self.base_wds):
                if base > 0:
                    group["weight_decay"] = cosine_value(base, self.weight_decay_end, progress)
        self.model.train()
        with self.autocast():
            out = self.model(self._to_device(batch))
        loss = out["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        logs = {k: float(v.detach()) for k, v in out.items()}
        if self.grad_clip is not None:
            logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip))
        self.optimizer.step()
        self.step_count += 1
        self.method.after_step(min(1.0, self.step_count / max(1, self.total_steps)))
        logs["lr"] = self.base_lrs[0] * factor
        return logs

    def state_dict(self) -> dict:
        return {
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step_count,
        }

    def load_state_dict(self, state: dict) -> None:
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count = state["step"]

