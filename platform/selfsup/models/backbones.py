"""Small backbones for small inputs. Each maps a batch (images ``(B, C, H, W)``, signals ``(B, C, T)``) to ``(B, embed_dim)``.

- ``cnn``: ``depth`` 3x3 conv-BN-ReLU blocks (channels ``width * 2**i``, stride 2 after the first),
  a last conv to ``embed_dim`` channels and global average pooling.
- ``cnn1d``: the same for signals ``(B, C, T)``, kernel 5 along time.
- ``mlp``: flatten, ``depth - 1`` Linear-BN-ReLU layers of ``width`` units, a Linear to ``embed_dim``.
- ``ft_transformer`` / ``vit1d``: the token transformers of T-JEPA (table rows) and the signal JEPA
  (time patches), in ``selfsup.models.transformers``.
- ``timm``: any timm model by name, randomly initialised (no download), classifier removed, so
  the representation is timm's pooled features (``embed_dim = num_features``). ViTs take the image
  and patch size from the config, accept other input sizes (dynamic_img_size: DINO local crops) and
  expose their patch tokens; ``small_stem`` gives ResNets the
  CIFAR-style stem (3x3 stride-1 first conv, no max-pool) for 8x8 to 32x32 images.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from selfsup.models.tokens import patchify, run_blocks, select
from selfsup.models.transformers import FeatureTransformer, ViT1d

BACKBONES: dict[str, str] = {}
"""Each registered backbone's name (``model.backbone``) -> its one-line description."""
BUILDERS: dict[str, Callable[..., nn.Module]] = {}
TRANSFORMERS: set[str] = set()
"""Backbones that are token transformers sized by ``embed_dim``, ``depth`` and ``heads``."""
PATCHED: set[str] = {"timm"}
"""Backbones with a patch grid for the masked methods (``tokens(x, keep)``, ``grid``,
``patchify``); ``timm`` only with a ViT (``model.timm_name: vit_*``)."""


def backbone(name: str, describe: str, transformer: bool = False, patches: bool = False):
    """Decorator: register ``builder(in_shape, embed_dim, width, depth, timm_name, patch_size,
    small_stem, timm_kwargs, heads, registers, groups, patch_stride, **modality_keys) -> nn.Module``
    (the ``model:`` section's keys, including those of every modality's ``model_fields``; each takes
    what it needs) as ``model.backbone: name``. The built module maps a batch of samples to
    ``(B, .embed_dim)``; ``transformer``: a token transformer (``embed_dim`` must divide by
    ``heads``); ``patches``: it has the masked methods' patch interface (see :data:`PATCHED`). A
    modality file registers the backbones of its own samples here (``selfsup.models.saved`` finds
    them again by the builder's module)."""

    def wrap(builder):
        if name in BUILDERS:
            raise ValueError(f"backbone {name!r} registered twice")
        BUILDERS[name], BACKBONES[name] = builder, describe
        if transformer:
            TRANSFORMERS.add(name)
        if patches:
            PATCHED.add(name)
        return builder

    return wrap


def has_patches(name: str, timm_name: str | None) -> bool:
    """Whether ``model.backbone: name`` (with ``model.timm_name``) gives the masked methods a patch grid."""
    return name in PATCHED and (name != "timm" or "vit" in (timm_name or ""))


def _conv(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int, embed_dim: int, width: int = 32, depth: int = 3):
        super().__init__()
        layers, c = [], in_channels
        for i in range(depth):
            c_out = width * 2**i
            layers.append(_conv(c, c_out, stride=1 if i == 0 else 2))
            c = c_out
        layers.append(_conv(c, embed_dim, stride=1))
        self.features = nn.Sequential(*layers)
        self.embed_dim = embed_dim

    def forward(self, x):
        return self.features(x).mean(dim=(2, 3))


class SmallCNN1d(nn.Module):
    def __init__(self, in_channels: int, embed_dim: int, width: int = 32, depth: int = 3):
        super().__init__()
        layers, c = [], in_channels
        for i in range(depth):
            c_out = width * 2**i
            layers += [nn.Conv1d(c, c_out, 5, stride=1 if i == 0 else 2, padding=2, bias=False), nn.BatchNorm1d(c_out), nn.ReLU(inplace=True)]
            c = c_out
        layers += [nn.Conv1d(c, embed_dim, 3, padding=1, bias=False), nn.BatchNorm1d(embed_dim), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.embed_dim = embed_dim

    def forward(self, x):
        return self.features(x).mean(dim=2)


class MLP(nn.Module):
    def __init__(self, in_features: int, embed_dim: int, width: int = 512, depth: int = 3):
        super().__init__()
        layers, d = [nn.Flatten()], in_features
        for _ in range(depth - 1):
            layers += [nn.Linear(d, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            d = width
        layers.append(nn.Linear(d, embed_dim))
        self.net = nn.Sequential(*layers)
        self.embed_dim, self.in_features = embed_dim, in_features

    def forward(self, x):
        return self.net(x)


class TimmBackbone(nn.Module):
    """A timm model without its classifier: ``forward`` gives pooled features ``(B, D)``,
    ``tokens`` the patch tokens ``(B, N, D)`` of a ViT (prefix tokens such as [CLS] dropped)."""

    def __init__(
        self, name: str, in_shape: tuple[int, ...], patch_size: int | None = None, small_stem: bool = False, **timm_kwargs
    ):
        super().__init__()
        import timm

        if not timm.is_model(name):
            raise ValueError(f"unknown timm model {name!r}")
        kwargs = {**timm_kwargs, "pretrained": False, "num_classes": 0, "in_chans": in_shape[0]}
        if "vit" in name:
            kwargs["img_size"] = tuple(in_shape[1:])
            kwargs.setdefault("dynamic_img_size", True)  # DINO's local crops are smaller than the image
            if patch_size:
                kwargs["patch_size"] = patch_size
        self.model = timm.create_model(name, **kwargs)
        if small_stem:
            conv1 = getattr(self.model, "conv1", None)
            if not isinstance(conv1, nn.Conv2d):
                raise ValueError(f"small_stem needs a ResNet-style conv1, {name!r} has none")
            self.model.conv1 = nn.Conv2d(in_shape[0], conv1.out_channels, 3, stride=1, padding=1, bias=False)
            self.model.maxpool = nn.Identity()
        self.embed_dim = self.model.num_features

    def forward(self, x):
        return self.model(x)

    @property
    def is_vit(self) -> bool:
        return hasattr(self.model, "patch_embed")

    @property
    def in_channels(self) -> int:
        return self.model.patch_embed.proj.in_channels

    @property
    def grid(self) -> tuple[int, int]:
        """The ViT's patch grid ``(H / p, W / p)``."""
        return tuple(self.model.patch_embed.grid_size)

    @property
    def patch_size(self) -> int:
        return self.model.patch_embed.patch_size[0]

    @property
    def patch_dim(self) -> int:
        """Values in one patch, ``p * p * C``: what MAE's decoder predicts per patch."""
        return self.patch_size**2 * self.in_channels

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, H/p * W/p, p * p * C)`` in the order of ``tokens``."""
        return patchify(x, (self.patch_size, self.patch_size))

    def tokens(self, x, keep: torch.Tensor | None = None, hide: torch.Tensor | None = None, mask_token: torch.Tensor | None = None):
        """Patch tokens ``(B, N, D)`` after the final norm; with ``keep`` ``(B, K)`` (patch indices,
        row-major) only those patches enter the encoder (after their positional embedding, as in
        I-JEPA's context encoder and MAE's encoder) and ``(B, K, D)`` comes out. With ``hide``
        ``(B, N)`` (bool) the embeddings of those patches are replaced by ``mask_token`` ``(1, 1, D)``
        before the positions are added (SAR-JEPA's and LoMaR's encoder)."""
        return self.sequence(x, keep, hide, mask_token)[:, self.model.num_prefix_tokens:]

    def pooled_and_tokens(self, x, hide: torch.Tensor | None = None, mask_token: torch.Tensor | None = None):
        """One pass giving what ``forward`` gives ``(B, D)`` (the [CLS] token or the pooled patches,
        after the model's pooling norm) and the patch tokens ``(B, N, D)``, with ``hide`` as in
        :meth:`tokens` (DINOv3's masked student: its [CLS] for the DINO loss, its patches for iBOT)."""
        t = self.sequence(x, hide=hide, mask_token=mask_token)
        return self.model.forward_head(t, pre_logits=True), t[:, self.model.num_prefix_tokens:]

    def sequence(self, x, keep=None, hide=None, mask_token=None) -> torch.Tensor:
        """The whole token sequence after the final norm, prefix tokens first (see :meth:`tokens`)."""
        m = self.model
        e = m.patch_embed(x)
        if hide is not None:
            e = torch.where(hide.view(*e.shape[:-1], 1), mask_token.to(e.dtype), e)
        t = m._pos_embed(e)
        n = m.num_prefix_tokens
        if keep is not None:
            t = torch.cat([t[:, :n], select(t[:, n:], keep)], dim=1)
        return m.norm(run_blocks(m.blocks, m.norm_pre(m.patch_drop(t)), m.grad_checkpointing))


def require_vit(backbone: nn.Module, method: str) -> None:
    """Raise a one-line error unless ``backbone`` has a patch grid (a timm ViT, or a modality's
    ViT such as the video ViT): masked methods work on patch tokens."""
    if not getattr(backbone, "is_vit", False):
        raise ValueError(f"method {method!r} needs a ViT backbone ({', '.join(sorted(PATCHED - {'timm'}))} or timm with a vit_* model.timm_name)")


def build_backbone(
    name: str,
    in_shape: tuple[int, ...],
    embed_dim: int,
    width: int,
    depth: int,
    timm_name: str | None = None,
    patch_size: int | None = None,
    small_stem: bool = False,
    timm_kwargs: dict | None = None,
    heads: int = 4,
    registers: int = 1,
    groups: tuple[int, ...] | None = None,
    patch_stride: int | None = None,
    **modality_keys,
) -> nn.Module:
    """Build a backbone for inputs of shape ``in_shape`` (``(C, H, W)``, ``(C, T)`` or ``(F,)``);
    ``.embed_dim`` gives its output size (``embed_dim`` except for ``timm``: the model's own feature
    size), ``.in_shape`` the sample shape it was built for (the autoencoders' decoders end there). ``timm_kwargs`` go to ``timm.create_model`` (e.g. ``depth``, ``embed_dim``, ``num_heads``,
    ``class_token``, ``global_pool``, ``drop_path_rate``). The token transformers take ``depth``
    blocks of ``heads`` heads and ``registers`` extra tokens; ``groups`` are a table's column widths
    (all 1 when not given); ``patch_stride`` makes ``vit1d``'s patches overlap (see ``ViT1d``);
    ``modality_keys`` are the ``model:`` keys of a modality's own (``Modality.model_fields``)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(BACKBONES)}")
    model = BUILDERS[name](in_shape=tuple(in_shape), embed_dim=embed_dim, width=width, depth=depth, timm_name=timm_name, patch_size=patch_size,
                           small_stem=small_stem, timm_kwargs=timm_kwargs or {}, heads=heads, registers=registers, groups=groups,
                           patch_stride=patch_stride, **modality_keys)
    model.in_shape = tuple(in_shape)
    return model


@backbone("cnn", "small conv net: conv-BN-ReLU blocks, stride-2 downsampling, global average pool")
def _cnn(in_shape, embed_dim, width, depth, **_):
    return SmallCNN(in_shape[0], embed_dim, width, depth)


@backbone("cnn1d", "1-D conv net for signals (C, T): conv-BN-ReLU blocks (kernel 5), stride-2, global average pool")
def _cnn1d(in_shape, embed_dim, width, depth, **_):
    return SmallCNN1d(in_shape[0], embed_dim, width, depth)


@backbone("mlp", "multilayer perceptron on flattened inputs")
def _mlp(in_shape, embed_dim, width, depth, **_):
    return MLP(math.prod(in_shape), embed_dim, width, depth)


@backbone("ft_transformer", "table rows as column tokens (numerical/categorical embeddings, [REG] tokens) + transformer (T-JEPA)",
          transformer=True)
def _ft_transformer(in_shape, embed_dim, depth, heads, registers, groups, **_):
    return FeatureTransformer(tuple(groups or (1,) * in_shape[0]), embed_dim, depth, heads, registers)


@backbone("vit1d", "ViT over time patches of all channels (model.patch_size samples), register tokens (signal JEPA)", transformer=True)
def _vit1d(in_shape, embed_dim, depth, heads, registers, patch_size, patch_stride, **_):
    return ViT1d(in_shape[0], in_shape[1], patch_size or 25, embed_dim, depth, heads, registers, patch_stride)


@backbone("timm", "any timm model by name (model.timm_name), random init, pooled features")
def _timm(in_shape, timm_name, patch_size, small_stem, timm_kwargs, **_):
    return TimmBackbone(timm_name, in_shape, patch_size, small_stem, **timm_kwargs)
