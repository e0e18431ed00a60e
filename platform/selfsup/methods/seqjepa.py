"""seq-JEPA: predicting the next view of a sequence of transformed views from the views so far and
the transformations between them (Ghaemi, Muller & Bakhtiari, 2025, "seq-JEPA: Autoregressive
Predictive Learning of Invariant-Equivariant World Models", NeurIPS 2025).

https://arxiv.org/abs/2505.03176 — sec. 3 and the reference code (hafezgh/seq-jepa,
``src/models.py``, ``SeqJEPA_Transforms``). Each image is seen as ``M + 1`` views, each made by a
transformation with parameters ``a_i`` (a resized crop and brightness/contrast jitter,
``selfsup.data.batch_views.transformed_view``: the "actions"). With the encoder ``f`` and its EMA
copy ``f'``:

    a = a / ||a||_views                                  # each parameter normalised over the M + 1 views
    z_i = f(x_i), i = 1..M                              # per-view encodings: equivariant
    u_i = [z_i, g(a_{i+1} - a_i)], u_M = [z_M, 0]        # each view with the action to the next
    s = T([AGG], u_1..u_M)[AGG]                          # aggregate of the sequence: invariant
    z_hat = h([s, g(a_{M+1} - a_M)])                     # predict the next view's encoding
    loss = 1 - cos(z_hat, sg(f'(x_{M+1})))

``g`` is a linear action embedding with a parameter-free BatchNorm, ``T`` a transformer, ``h`` an
MLP. The metrics and probes see the invariant representation (``embed``: the aggregate of ``M``
copies of the untransformed image, zero actions); the per-view encoding is what
``label_free/equivariance_r2`` scores: how much of the transformation parameters a ridge
regression reads from it, on held-out views (a label-free equivariance probe, after the
reference's parameter regressors).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from selfsup.data.batch_views import ACTION_DIM, transformed_view
from selfsup.methods.base import Method, register
from selfsup.sections import Fraction, Range, Section, check_shares
from selfsup.methods.ema import ema_update

EQUIVARIANCE_SEED = 1234


def seqjepa_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - mean_b cos(prediction_b, target_b)`` over ``(B, D)``, the target detached."""
    return 1 - F.cosine_similarity(prediction, target.detach(), dim=-1).mean()


def relative_actions(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From the parameters ``(B, M + 1, A)`` of a sequence of views: the action from each observed
    view to the next ``(B, M, A)`` (the last observed one's is 0: it is the prediction's) and the
    action to the view to predict ``(B, A)``. The parameters are first L2-normalised over the
    sequence's views, each parameter of each sample on its own, as the reference's training loop
    does before they reach the model (``src/engine.py``, ``train_one_epoch_aug``:
    ``F.normalize(aug_params, p=2, dim=1)``)."""
    actions = F.normalize(params, p=2, dim=1)
    m = actions.shape[1] - 1
    steps = torch.zeros_like(actions[:, :m])
    steps[:, :-1] = actions[:, 1:m] - actions[:, : m - 1]
    return steps, actions[:, m] - actions[:, m - 1]


def ridge_r2(features: torch.Tensor, targets: torch.Tensor, alpha: float = 1.0) -> float:
    """R^2 on the second half of a ridge regression ``features (N, D) -> targets (N, A)`` fitted
    on the first half (both standardised on the first half), averaged over the ``A`` targets."""
    n = features.shape[0] // 2
    x, y = features.double(), targets.double()
    mx, sx = x[:n].mean(0), x[:n].std(0).clamp_min(1e-8)
    my, sy = y[:n].mean(0), y[:n].std(0).clamp_min(1e-8)
    x, y = (x - mx) / sx, (y - my) / sy
    w = torch.linalg.solve(x[:n].T @ x[:n] + alpha * torch.eye(x.shape[1], dtype=x.dtype, device=x.device), x[:n].T @ y[:n])
    residual = ((y[n:] - x[n:] @ w) ** 2).sum(0)
    total = ((y[n:] - y[n:].mean(0)) ** 2).sum(0).clamp_min(1e-12)
    return float((1 - residual / total).mean())


@torch.no_grad()
def equivariance_r2(encode, x: torch.Tensor, crop_scale: tuple[float, float], jitter: float) -> float:
    """:func:`ridge_r2` of the parameters of one random transformed view of each sample of ``x``
    (``transformed_view``, fixed seed) read from ``encode(view)`` ``(N, D)``: how much of the
    transformation an encoding carries (seq-JEPA's per-view encoding, SIE's equivariant part)."""
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(EQUIVARIANCE_SEED)
        codes, params = [], []
        for chunk in x.split(256):
            v, a = transformed_view(chunk, chunk.shape[-1], crop_scale, jitter=jitter)
            codes.append(encode(v).float())
            params.append(a.float())
    return ridge_r2(torch.cat(codes), torch.cat(params))


class SeqJEPAConfig(Section):
    """seq-JEPA (Ghaemi et al., 2025): observed views per sequence ``views`` (``M``), the action
    embedding's width, the aggregator's depth and heads, the predictor's hidden width, the EMA
    rate of the target encoder (fixed, as in the reference), and the transformations (crop area
    range, brightness/contrast jitter)."""

    name: Literal["seqjepa"] = "seqjepa"
    views: int = Field(3, ge=1)
    action_dim: int = Field(128, ge=1)
    depth: int = Field(3, ge=1)
    heads: int = Field(4, ge=1)
    predictor_hidden: int = Field(1024, ge=1)
    base_momentum: Fraction = 0.996
    crop_scale: Range = (0.25, 1.0)
    jitter: Fraction = 0.4

    @model_validator(mode="after")
    def _check(self) -> "SeqJEPAConfig":
        check_shares(self, "crop_scale")
        return self


@register("seqjepa")
class SeqJEPA(Method):
    description = "seq-JEPA (Ghaemi et al. 2025): a transformer over view-action pairs predicts the next view's EMA encoding"
    family = "jepa"
    config = SeqJEPAConfig
    modality = "image"
    recipes = ("none",)
    masked = True
    n_views = 1
    own_metrics = ("label_free/equivariance_r2",)

    def __init__(
        self,
        backbone,
        views: int = 3,
        action_dim: int = 128,
        depth: int = 3,
        heads: int = 4,
        predictor_hidden: int = 1024,
        base_momentum: float = 0.996,
        crop_scale: tuple[float, float] = (0.25, 1.0),
        jitter: float = 0.4,
    ):
        super().__init__(backbone)
        from timm.models.vision_transformer import Block

        dim = backbone.embed_dim
        width = dim + action_dim
        if width % heads:
            raise ValueError(f"seq-JEPA's tokens are {dim} (model.embed_dim) + {action_dim} (action_dim) = {width} wide: not divisible by heads {heads}")
        self.m, self.base_momentum, self.crop_scale, self.jitter = views, base_momentum, tuple(crop_scale), jitter
        self.target = copy.deepcopy(backbone).requires_grad_(False)
        self.action = nn.Sequential(nn.Linear(ACTION_DIM, action_dim, bias=False), nn.BatchNorm1d(action_dim, affine=False))
        self.agg_token = nn.Parameter(torch.zeros(1, 1, width))
        self.aggregator = nn.Sequential(*[Block(width, heads, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Sequential(
            nn.Linear(width + action_dim, predictor_hidden, bias=False), nn.BatchNorm1d(predictor_hidden), nn.ReLU(inplace=True), nn.Linear(predictor_hidden, dim)
        )

    def masks(self):
        """The transformations' random draws, made at collate time like the masked methods' masks
        (so that a compiled step and every worker's shard see the same): ``{"draws": (B, M + 1, 7)}``."""
        return lambda batch_size: {"draws": torch.rand(batch_size, self.m + 1, 7)}

    def _views(self, x: torch.Tensor, draws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The transformed views of each image for ``draws`` ``(B, n, 7)``: ``(views (B, n, C, H, W), params (B, n, A))``."""
        made = [transformed_view(x, x.shape[-1], self.crop_scale, jitter=self.jitter, u=draws[:, i]) for i in range(draws.shape[1])]
        return torch.stack([v for v, _ in made], dim=1), torch.stack([a for _, a in made], dim=1)

    def aggregate(self, encodings: torch.Tensor, actions: torch.Tensor | None) -> torch.Tensor:
        """The [AGG] output ``(B, D + action_dim)`` of encodings ``(B, M, D)`` with embedded actions
        ``(B, M, action_dim)`` (``None``: all zero)."""
        b, m, _ = encodings.shape
        if actions is None:
            actions = encodings.new_zeros(b, m, self.agg_token.shape[-1] - encodings.shape[-1])
        tokens = torch.cat([self.agg_token.expand(b, -1, -1), torch.cat([encodings, actions], dim=-1)], dim=1)
        return self.norm(self.aggregator(tokens))[:, 0]

    def forward(self, batch):
        (x,) = batch["views"]
        b = x.shape[0]
        views, params = self._views(x, batch["draws"])
        with torch.no_grad():
            target = self.target(views[:, -1]).float()
        z = self.backbone(views[:, :-1].flatten(0, 1)).view(b, self.m, -1)
        steps, to_next = relative_actions(params)
        embedded = self.action(steps.flatten(0, 1)).view(b, self.m, -1).clone()
        embedded[:, -1] = 0.0
        s = self.aggregate(z, embedded.to(z.dtype))
        prediction = self.head(torch.cat([s, self.action(to_next).to(s.dtype)], dim=-1)).float()
        return {"loss": seqjepa_loss(prediction, target)}

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The invariant representation: the aggregate of ``M`` copies of ``x``, no actions ``(B, D + action_dim)``."""
        z = self.backbone(x)
        return self.aggregate(z[:, None].expand(-1, self.m, -1), None)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The per-view (equivariant) encoding ``(B, D)``."""
        return self.backbone(x)

    @torch.no_grad()
    def view_embed(self, x: torch.Tensor) -> torch.Tensor:
        """One view for LiDAR: the aggregate of ``M`` random transformed views of ``x`` with their actions."""
        views, params = self._views(x, torch.rand(len(x), self.m + 1, 7, device=x.device))
        z = self.backbone(views[:, :-1].flatten(0, 1)).view(len(x), self.m, -1)
        steps, _ = relative_actions(params)
        was = self.action.training
        self.action.eval()
        embedded = self.action(steps.flatten(0, 1)).view(len(x), self.m, -1).clone()
        self.action.train(was)
        embedded[:, -1] = 0.0
        return self.aggregate(z, embedded)

    @torch.no_grad()
    def label_free_metrics(self, x: torch.Tensor) -> dict[str, float]:
        """``label_free/equivariance_r2``: R^2 of the transformation parameters read from the
        per-view encoding of one random view of each sample (a ridge regression fitted on half the
        samples, scored on the other half; fixed seed)."""
        return {"label_free/equivariance_r2": equivariance_r2(self.backbone, x, self.crop_scale, self.jitter)}

    def after_step(self, progress: float) -> None:
        ema_update(self.target, self.backbone, self.base_momentum)
