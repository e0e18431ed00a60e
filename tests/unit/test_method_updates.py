"""The method contract: a step moves the online weights; target/momentum networks get no
gradient and move only by their EMA; ``embed`` and ``project`` shapes."""

import copy

import pytest
import torch

from selfsup.data.views import ViewCollate
from selfsup.methods import METHODS, build_method
from selfsup.models.backbones import build_backbone
from selfsup.methods.ema import cosine_momentum, linear_momentum
from selfsup.train.engine import Engine, build_optimizer

PARAMS = {
    "vicreg": dict(projector=[32, 32]),
    "simclr": dict(projector=[32, 16]),
    "barlowtwins": dict(projector=[32, 32]),
    "mocov3": dict(projector=[32, 16], predictor=[32, 16], base_momentum=0.9),
    "byol": dict(projector=[32, 16], predictor=[32, 16], base_momentum=0.9),
    "dino": dict(hidden=32, bottleneck=16, prototypes=64, base_momentum=0.9),
    "ijepa": dict(predictor_dim=16, predictor_depth=1, predictor_heads=2, base_momentum=0.9, n_pred=2, min_keep=2),
    "mae": dict(decoder_dim=16, decoder_depth=1, decoder_heads=2),
    "tjepa": dict(predictor_dim=16, predictor_depth=1, predictor_heads=2, base_momentum=0.9, n_pred=2),
    "sjepa": dict(predictor_dim=16, predictor_depth=1, predictor_heads=2, base_momentum=0.9, final_momentum=0.98, min_block=2),
    "timedrl": dict(dropout=0.0),  # no dropout: a compiled step draws other dropout masks than the eager one
    "twotower": dict(projector=[32, 16]),
    "sarjepa": dict(window=2, n_windows=2, scales=[1], predictor_dim=16, predictor_depth=1, predictor_heads=2),
    "seqjepa": dict(views=2, action_dim=8, depth=1, heads=2, predictor_hidden=16, base_momentum=0.9),
    "cvrl": dict(projector=[32, 16]),
    "vcop": dict(clip_frames=1, gap=1, dropout=0.0),  # 3 one-frame clips of a 5-frame clip; no dropout (compiled = eager)
    "iicc": dict(prototypes=8, slice_prototypes=8, slice_projector=[32, 16]),
    "adljepa": dict(predictor_depth=1, base_momentum=0.9),
    "collossl": dict(temperature=0.5),
    "depict": dict(clusters=4),
    "scatsimclr": dict(projector=[16, 8], jigsaw_permutations=4, pretext_widths=[8, 16], pretext_dropout=0.0),
    "dinov3": dict(hidden=32, bottleneck=16, prototypes=64, ibot_prototypes=64, base_momentum=0.9),
    "sie": dict(equi=8, projector=[16, 16]),
    "gedi": dict(clusters=4, projector=[16, 8], sgld_steps=2, buffer=32),
    "gsimclr": dict(projector=[32, 16], clusters=8, dae_latent=8, dae_epochs=1),
    "interclr": dict(queue=32, projector=[16, 8], negatives=8, semihard_pool=16, clusters=4, base_momentum=0.9),
    "actjepa": dict(context_steps=2, chunk=3, predictor_dim=8, predictor_depth=1, predictor_heads=2, base_momentum=0.9),
}
TARGETS = {"interclr": "key_encoder", "dinov3": "teacher", "byol": "target", "mocov3": "momentum_encoder", "dino": "teacher", "ijepa": "target", "tjepa": "target", "sjepa": "target", "seqjepa": "target", "adljepa": "target", "actjepa": "target"}
# the JEPAs' EMA rates rise linearly (to 1; the signal JEPA's to final_momentum), the others' on a cosine
MOMENTUM = {"interclr": 0.9, "ijepa": 0.9 + 0.1 * 0.25, "tjepa": 0.9 + 0.1 * 0.25, "adljepa": 0.9 + 0.1 * 0.25, "actjepa": 0.9 + 0.1 * 0.25, "sjepa": 0.9 + 0.08 * 0.25, "seqjepa": 0.9}  # seq-JEPA's is fixed
EMBED_EXTRA = {"seqjepa": 8}  # seq-JEPA's representation is the aggregate: the encoding and an action embedding wide
INPUT = {"tjepa": (10,), "sjepa": (2, 40), "timedrl": (2, 40), "twotower": (10,), "cvrl": (3, 4, 8, 8), "vcop": (3, 5, 8, 8),
         "iicc": (1, 4, 8, 8), "adljepa": (64, 4), "collossl": (3, 3, 16), "actjepa": (6, 4)}
"""A table row, a 2-channel signal, RGB clips, a volume, a point cloud, windows of 3 body-worn
sensors, a trajectory of 3 observation values and 1 action value; images (1, 8, 8) for the others."""
VIT = dict(depth=1, embed_dim=32, num_heads=2, class_token=False, global_pool="avg", fc_norm=False)


def backbone(name):
    if name in ("ijepa", "mae", "sarjepa", "dinov3"):
        return build_backbone("timm", (1, 8, 8), 0, 0, 0, timm_name="vit_tiny_patch16_224", patch_size=2, timm_kwargs=VIT)
    if name == "tjepa":
        return build_backbone("ft_transformer", INPUT[name], 16, 0, 1, heads=2)
    if name in ("sjepa", "timedrl"):
        return build_backbone("vit1d", INPUT[name], 16, 0, 1, patch_size=4, heads=2, patch_stride=2 if name == "timedrl" else None)
    if name == "twotower":
        return build_backbone("mlp", INPUT[name], 16, 32, 2)
    if name in ("cvrl", "vcop"):
        return build_backbone("cnn3d", INPUT[name], 16, 4, 2)
    if name == "iicc":
        return build_backbone("slice_cnn", INPUT[name], 16, 4, 2, heads=2, slice_layers=1)
    if name == "adljepa":  # points in [0, 1) m: 4 of the 4 x 4 output cells of a +-1 m grid
        return build_backbone("bev", INPUT[name], 16, 8, 2, point_range=1.0, bev_cells=8)
    if name == "scatsimclr":
        return build_backbone("scatnet", (1, 8, 8), 16, 4, 1)
    if name == "collossl":
        return build_backbone("device_cnn", INPUT[name], 16, 8, 2)
    if name == "actjepa":
        return build_backbone("trajectory_transformer", INPUT[name], 16, 0, 1, heads=2, groups=(3, 1))
    return build_backbone("cnn", (1, 8, 8), 24, 8, 2)


def sample(name, n):
    return torch.rand(n, *INPUT.get(name, (1, 8, 8)))


def make(name):
    """The method of ``name`` with the contract tests' small settings, prepared on 32 random samples
    as the worker prepares it on the training set (``Method.prepare``)."""
    torch.manual_seed(0)
    method = build_method(name, backbone(name), **PARAMS[name])
    method.prepare(sample(name, 32), None)
    return method


def batch(method, n=16):
    """A collated batch of ``n`` random samples, with their indices as the loader gives them."""
    collate = ViewCollate(lambda x: [x] if method.n_views == 1 else [x, torch.rand_like(x)], method.masks())
    return {**collate([(x,) for x in sample(method.name, n)]), "index": torch.arange(n)}


def test_linear_momentum():
    assert linear_momentum(0.996, 0.0) == pytest.approx(0.996)
    assert linear_momentum(0.996, 0.5) == pytest.approx(0.998)
    assert linear_momentum(0.99, 1.0, final=0.999) == pytest.approx(0.999)


def test_cosine_momentum():
    assert cosine_momentum(0.99, 0.0) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 0.5) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 1.0) == pytest.approx(1.0)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_step_updates_online_and_ema_only(name):
    method = make(name)
    assert method.embed(sample(name, 3)).shape == (3, method.backbone.embed_dim + EMBED_EXTRA.get(name, 0))
    assert method.project(sample(name, 3)).shape[0] == 3
    before = copy.deepcopy(method.state_dict())
    engine = Engine(method, method, build_optimizer(method, lr=1e-2), total_steps=4)
    engine.train_step(batch(method))

    online = dict(method.backbone.named_parameters())
    assert any(not torch.equal(p, before[f"backbone.{k}"]) for k, p in online.items())
    if name in TARGETS:
        target = getattr(method, TARGETS[name])
        m = MOMENTUM.get(name, cosine_momentum(0.9, 0.25))  # after step 1 of 4
        encoder = getattr(target, "backbone", target)
        prefix = f"{TARGETS[name]}.backbone." if encoder is not target else f"{TARGETS[name]}."
        for k, p in encoder.named_parameters():
            assert not p.requires_grad and p.grad is None
            expected = m * before[prefix + k] + (1 - m) * online[k].detach()
            assert torch.allclose(p, expected, atol=1e-6)


def test_dino_center_and_teacher_temperature():
    torch.manual_seed(0)
    method = build_method("dino", backbone("dino"), hidden=32, bottleneck=16, prototypes=64, center_momentum=0.9,
                          teacher_temp=0.07, warmup_teacher_temp=0.04, teacher_temp_warmup=0.5)
    assert float(method.current_teacher_temp()) == pytest.approx(0.04)
    b = batch(method, 8)
    with torch.no_grad():
        teacher = method.teacher(torch.cat(b["views"]))  # both global crops in one batch, as DINO runs them
    method(b)
    assert torch.allclose(method.center, 0.1 * teacher.mean(dim=0, keepdim=True), atol=1e-6)
    method.after_step(0.25)
    assert float(method.current_teacher_temp()) == pytest.approx(0.055)
    method.after_step(0.75)
    assert float(method.current_teacher_temp()) == pytest.approx(0.07)


def test_dino_last_layer_frozen_early():
    torch.manual_seed(0)
    method = build_method("dino", backbone("dino"), hidden=32, bottleneck=16, prototypes=64, freeze_last_layer=0.5)
    method(batch(method, 8))["loss"].backward()
    assert method.head.prototypes.grad is None and method.backbone.features[0][0].weight.grad is not None
    method.zero_grad()
    method.after_step(0.5)
    method(batch(method, 8))["loss"].backward()
    assert method.head.prototypes.grad is not None


@pytest.mark.parametrize("name", sorted(METHODS))
def test_step_under_bf16_autocast(name):
    method = make(name)
    before = copy.deepcopy(method.backbone.state_dict())
    engine = Engine(method, method, build_optimizer(method, lr=1e-2), total_steps=4, precision="bf16")
    logs = engine.train_step(batch(method))
    assert torch.isfinite(torch.tensor(logs["loss"]))
    assert all(p.dtype == torch.float32 for p in method.parameters())  # autocast, not a bf16 model
    assert any(not torch.equal(p, before[k]) for k, p in method.backbone.state_dict().items())
