"""Saved backbones: every backbone kind round-trips through safetensors + JSON to the same outputs."""

import json

import pytest
import torch

from selfsup.models.backbones import build_backbone
from selfsup.models.saved import META, backbone_kwargs, load_backbone, save_backbone

VIT = {"depth": 1, "embed_dim": 32, "num_heads": 2, "class_token": False, "global_pool": "avg", "fc_norm": False}
CASES = {
    "cnn": ({"backbone": "cnn", "embed_dim": 16, "width": 8, "depth": 2}, (1, 8, 8), None),
    "cnn1d": ({"backbone": "cnn1d", "embed_dim": 16, "width": 8, "depth": 2}, (3, 40), None),
    "mlp": ({"backbone": "mlp", "embed_dim": 16, "width": 32, "depth": 2}, (10,), None),
    "ft_transformer": ({"backbone": "ft_transformer", "embed_dim": 16, "width": 0, "depth": 1, "heads": 2, "registers": 2}, (6,), (1, 1, 4)),
    "vit1d": ({"backbone": "vit1d", "embed_dim": 16, "width": 0, "depth": 1, "heads": 2, "patch_size": 5}, (2, 40), None),
    "timm": ({"backbone": "timm", "embed_dim": 0, "width": 0, "depth": 1, "timm_name": "vit_tiny_patch16_224", "patch_size": 4,
              "timm_kwargs": VIT}, (1, 16, 16), None),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_saved_backbone_gives_the_same_outputs(kind, tmp_path):
    model, shape, groups = CASES[kind]
    torch.manual_seed(0)
    net = build_backbone(**backbone_kwargs(model, shape, groups)).eval()
    with torch.no_grad():
        for p in net.parameters():  # not the initial values: the weights must really come from the file
            p.add_(0.01 * torch.randn_like(p))
    save_backbone(net, tmp_path / "out", model, shape, groups, source={"run_id": "abc"})
    loaded = load_backbone(tmp_path / "out")
    x = torch.randn(3, *shape)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))
    assert json.loads((tmp_path / "out" / META).read_text())["source"] == {"run_id": "abc"}


def test_loading_a_directory_without_a_saved_backbone_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="backbone.safetensors: not found"):
        load_backbone(tmp_path)
