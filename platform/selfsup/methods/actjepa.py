"""ACT-JEPA: a joint-embedding predictive architecture for policy representations (Vujinovic &
Kovacevic, "ACT-JEPA: Novel Joint-Embedding Predictive Architecture for Efficient Policy
Representation Learning", 2025, https://arxiv.org/abs/2501.14622).

From the observations so far, a policy predicts the chunk of its next actions (action chunking, as
ACT, Zhao et al. 2023) and, in the latent space of an EMA target encoder, the chunk of the next
observations (the JEPA part: a world model that ignores what cannot be predicted). A window of
``T`` steps is split into ``context_steps`` steps of history and the ``chunk`` steps after them:

    s_x = encoder(o_1 .. o_c)                                   # (B, c, E), the context encoder
    s_y = LayerNorm(target(o_1 .. o_{c+k}))[c .. c+k-1]           # (B, k, E), EMA weights, no gradient
    q = predictor([s_x ; query_1 .. query_k])[c ..]             # k learned queries at the chunk's positions
    loss = action_weight * |action_head(q) - a_c .. a_{c+k-1}|_1  + observation_weight * |obs_head(q) - s_y|_1

(``a_c`` is the action taken at the last observed step; ``|.|_1`` the mean absolute error, the L1 of
ACT's action loss and of V-JEPA's latent loss). The predictor is a transformer over the context's
tokens and the queries, with the steps' sine-cosine positions; the EMA rate rises linearly from
``base_momentum`` (0.996) to 1 as I-JEPA's. ``embed`` is the target encoder's mean token over the
window's observations (the JEPAs' convention here).

Here: observations are the state vectors of the trajectories modality (the paper's also include
camera images through a ResNet); the action head is a linear map of the predictor's outputs (the
paper's action decoder is a transformer decoder as ACT's); no CVAE latent (ACT's style variable),
which the paper also drops. The actions enter only the loss, never the encoders: the
representation is the policy's view of the world. That the objective uses the recorded actions
makes it imitation learning on whatever the episodes did, as in the paper.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from selfsup.methods.base import Method, PredictorShape, register
from selfsup.methods.ema import ema_update, linear_momentum
from selfsup.models.tokens import sincos_pos_embed
from selfsup.sections import Fraction


def actjepa_loss(predicted_actions: torch.Tensor, actions: torch.Tensor, predicted_latents: torch.Tensor, latents: torch.Tensor,
                 action_weight: float = 1.0, observation_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, action L1, latent L1)``: mean absolute errors of the action chunk ``(B, k, A)`` and of the
    observation chunk's latents ``(B, k, E)`` (targets detached), weighted and summed."""
    act = F.l1_loss(predicted_actions.float(), actions.float())
    obs = F.l1_loss(predicted_latents.float(), latents.detach().float())
    return action_weight * act + observation_weight * obs, act, obs


class ACTJEPAConfig(PredictorShape):
    """ACT-JEPA (Vujinovic & Kovacevic, 2025): the steps of history and the chunk predicted after them
    (their sum at most the windows' steps, ``data.horizon``), the predictor's size, the two losses'
    weights and the target EMA."""

    name: Literal["actjepa"] = "actjepa"
    context_steps: int = Field(8, ge=1)
    chunk: int = Field(8, ge=1)
    predictor_dim: int = Field(64, ge=2)
    predictor_depth: int = Field(2, ge=1)
    predictor_heads: int = Field(4, ge=1)
    action_weight: float = Field(1.0, ge=0.0)
    observation_weight: float = Field(1.0, ge=0.0)
    base_momentum: Fraction = 0.996


@register("actjepa")
class ACTJEPA(Method):
    description = "ACT-JEPA (Vujinovic & Kovacevic 2025): predict the next actions and, in an EMA encoder's latent space, the next observations"
    family = "jepa"
    config = ACTJEPAConfig
    modality = "trajectories"
    recipes = ("none", "trajectory")
    backbones = ("trajectory_transformer",)
    n_views = 1
    encoder = "target"

    def __init__(self, backbone, context_steps: int = 8, chunk: int = 8, predictor_dim: int = 64, predictor_depth: int = 2, predictor_heads: int = 4,
                 action_weight: float = 1.0, observation_weight: float = 1.0, base_momentum: float = 0.996):
        from timm.models.vision_transformer import Block

        super().__init__(backbone)
        if context_steps + chunk > backbone.steps:
            raise ValueError(f"method.context_steps {context_steps} + method.chunk {chunk} exceed the windows' {backbone.steps} steps (data.horizon)")
        e = backbone.embed_dim
        self.context_steps, self.chunk, self.base_momentum = context_steps, chunk, base_momentum
        self.action_weight, self.observation_weight = action_weight, observation_weight
        self.target = copy.deepcopy(backbone).requires_grad_(False)
        self.into = nn.Linear(e, predictor_dim)
        self.queries = nn.Parameter(torch.zeros(1, chunk, predictor_dim))
        nn.init.normal_(self.queries, std=0.02)
        self.register_buffer("pos", sincos_pos_embed(predictor_dim, (context_steps + chunk,))[None], persistent=False)
        self.blocks = nn.Sequential(*[Block(predictor_dim, predictor_heads, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(predictor_depth)])
        self.norm = nn.LayerNorm(predictor_dim)
        self.action_head = nn.Linear(predictor_dim, backbone.actions)
        self.latent_head = nn.Linear(predictor_dim, e)

    def forward(self, batch):
        (x,) = batch["views"]
        c, k = self.context_steps, self.chunk
        with torch.no_grad():
            s_y = self.target.tokens(x[:, : c + k]).float()
            s_y = F.layer_norm(s_y, s_y.shape[-1:])[:, c:]
        s_x = self.into(self.backbone.tokens(x[:, :c]))
        q = self.norm(self.blocks(torch.cat([s_x, self.queries.expand(len(x), -1, -1)], dim=1) + self.pos))[:, c:]
        actions = x[:, c - 1 : c - 1 + k, self.backbone.observation :]
        loss, act, obs = actjepa_loss(self.action_head(q), actions, self.latent_head(q), s_y, self.action_weight, self.observation_weight)
        return {"loss": loss, "action_l1": act, "latent_l1": obs}

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """No projector: the context encoder's mean token over the window ``(B, E)``."""
        return self.backbone(x)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.target(x)

    @torch.no_grad()
    def view_embed(self, x: torch.Tensor) -> torch.Tensor:
        """One view for LiDAR: the target encoder's mean token ``(B, E)`` over a random stretch of
        ``context_steps + chunk`` steps of each window (the method's own unit of time; its recipe,
        ``none``, changes nothing)."""
        b, t, c = x.shape
        length = self.context_steps + self.chunk
        start = torch.randint(t - length + 1, (b, 1), device=x.device)
        steps = (start + torch.arange(length, device=x.device)).unsqueeze(-1).expand(-1, -1, c)
        return self.target(x.gather(1, steps))

    def after_step(self, progress: float) -> None:
        ema_update(self.target, self.backbone, linear_momentum(self.base_momentum, progress))
