import pytest
import torch

from selfsup.methods import build_method
from selfsup.models.backbones import build_backbone
from selfsup.train.engine import Engine, build_optimizer


@pytest.mark.parametrize(
    "kind, kwargs, dim",
    [
        ("cnn", {}, 24),
        ("mlp", {}, 24),
        ("timm", {"timm_name": "resnet18", "small_stem": True}, 512),
        ("timm", {"timm_name": "vit_small_patch16_224", "patch_size": 2}, 384),
    ],
)
def test_representation_shapes(kind, kwargs, dim):
    net = build_backbone(kind, (1, 8, 8), 24, 8, 2, **kwargs)
    assert net.embed_dim == dim and net(torch.rand(3, 1, 8, 8)).shape == (3, dim)


def test_vit_exposes_patch_tokens():
    vit = build_backbone("timm", (3, 16, 16), 0, 0, 0, timm_name="vit_small_patch16_224", patch_size=4)
    assert vit.tokens(torch.rand(2, 3, 16, 16)).shape == (2, 16, 384)  # 4x4 patches, [CLS] dropped


def test_small_stem_keeps_resolution_longer():
    plain = build_backbone("timm", (3, 32, 32), 0, 0, 0, timm_name="resnet18")
    small = build_backbone("timm", (3, 32, 32), 0, 0, 0, timm_name="resnet18", small_stem=True)
    x = torch.rand(2, 3, 32, 32)
    assert plain.model.forward_features(x).shape[-1] == 1 and small.model.forward_features(x).shape[-1] == 4


def test_unknown_timm_model():
    with pytest.raises(ValueError, match="unknown timm model 'resnet19x'"):
        build_backbone("timm", (1, 8, 8), 0, 0, 0, timm_name="resnet19x")


def test_method_steps_on_timm_backbone():
    torch.manual_seed(0)
    method = build_method("simclr", build_backbone("timm", (1, 8, 8), 0, 0, 0, timm_name="resnet18", small_stem=True), projector=[64, 32])
    engine = Engine(method, method, build_optimizer(method, lr=1e-3), total_steps=2)
    views = {"views": [torch.rand(16, 1, 8, 8), torch.rand(16, 1, 8, 8)]}
    first = engine.train_step(views)["loss"]
    assert engine.train_step(views)["loss"] < first
