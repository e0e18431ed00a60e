"""The engine's speed options keep the step correct: a ``torch.compile``d step (TorchDynamo with
AOTAutograd, and Inductor on the CPU for two methods) gives every method the eager step's loss and weights; a model the
compiler fails on falls back to eager with a one-line reason, and an error of the model itself
still propagates; channels-last convolutions, activation checkpointing and fused AdamW change
nothing but speed and memory; I-JEPA's one-batch predictor equals one call per block; every
attention path uses scaled-dot-product attention."""

import copy
import logging

import pytest
import torch
from torch import nn

from selfsup.methods import METHODS, build_method
from selfsup.models.backbones import build_backbone
from selfsup.models.tokens import enable_grad_checkpointing, select
from selfsup.train.engine import Engine, build_optimizer, has_conv2d, to_channels_last
from tests.unit.test_method_updates import PARAMS, backbone, batch, make


def step(method, data, **options):
    """Loss of one AdamW step of ``method`` on ``data`` (seeded: masks and DINO's crops alike)."""
    engine = Engine(method, method, build_optimizer(method, "adamw", lr=1e-5), total_steps=2, **options)
    torch.manual_seed(3)
    return engine, engine.train_step(copy.deepcopy(data))["loss"]


def close(a: nn.Module, b: nn.Module, tol: float) -> bool:
    """Same weights and buffers, and the same gradients of the step just taken (Adam's first step
    moves a weight by ~lr whatever its gradient's size, so a bias whose true gradient is 0 moves
    by rounding noise: the gradients are the sharper comparison)."""
    same = all(torch.allclose(x, y, rtol=tol, atol=tol) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    grads = [(p.grad, q.grad) for p, q in zip(a.parameters(), b.parameters()) if p.grad is not None or q.grad is not None]
    return same and all(x is not None and y is not None and torch.allclose(x, y, rtol=tol, atol=tol) for x, y in grads)


INDUCTOR = {"simclr", "ijepa"}
"""Methods whose compiled step runs through Inductor (the GPU default: generated C++ on the CPU,
40 s a method here): a CNN method and a masked ViT (and a JEPA's EMA target). The others'
through AOTAutograd's ``aot_eager`` (Dynamo's capture and the joint forward-backward graph, the
part that reads a method's own code, without code generation)."""


EAGER_REGIONS = {"scatsimclr", "gedi"}
"""Methods with a part left eager by design (ScatSimCLR's scattering transform: complex FFTs; GEDI's
SGLD sampler: gradients with respect to the images), around which the compiled step breaks."""


@pytest.mark.parametrize("name", sorted(METHODS))
def test_compiled_step_matches_eager(name):
    """The compiled step equals the eager one, and is one graph without breaks (the GPU benchmark's
    engine rows say the same of the paper configurations: benchmarks/gpu_throughput.py)."""
    from torch._dynamo.utils import counters

    eager, compiled = make(name), make(name)
    data = batch(eager)
    _, expected = step(eager, data)
    counters.clear()
    engine, got = step(compiled, data, compile=True, **({} if name in INDUCTOR else {"compile_backend": "aot_eager"}))
    assert engine.compile_fallback is None
    breaks = sum(counters["graph_break"].values())
    assert breaks > 0 if name in EAGER_REGIONS else (breaks == 0 and counters["frames"]["ok"] == 1), (breaks, dict(counters["graph_break"]))
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert close(compiled, eager, 1e-4)


def test_dino_compiles_once_through_its_teacher_temperature_warmup():
    """The teacher temperature changes every step: read as a Python float it recompiled the step
    every step (and gave up compiling after Dynamo's recompile limit)."""
    torch._dynamo.reset()  # the DINO instances compiled by other tests share forward's code object
    torch.manual_seed(0)
    method = build_method("dino", backbone("dino"), **PARAMS["dino"], teacher_temp=0.07, teacher_temp_warmup=1.0)
    engine = Engine(method, method, build_optimizer(method), total_steps=4, compile=True, compile_backend="aot_eager")
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(4):
            engine.train_step(batch(method))
    assert engine.compile_fallback is None and float(method.current_teacher_temp()) == pytest.approx(0.07)


def failing_backend(gm, example_inputs):
    raise RuntimeError("this backend cannot compile anything\nsecond line of a long compiler report")


def test_a_model_that_cannot_compile_falls_back_to_eager_with_a_one_line_reason(caplog):
    eager, fallen = make("simclr"), make("simclr")
    data = batch(eager)
    _, expected = step(eager, data)
    with caplog.at_level(logging.WARNING, logger="selfsup.train.engine"):
        engine, got = step(fallen, data, compile=True, compile_backend=failing_backend)
    assert got == pytest.approx(expected, rel=1e-6)
    assert close(fallen, eager, 1e-6)
    assert engine.compiled is None and "\n" not in engine.compile_fallback
    assert "this backend cannot compile anything" in engine.compile_fallback
    assert [r.getMessage() for r in caplog.records] == [f"torch.compile failed, running eagerly: {engine.compile_fallback}"]
    engine.train_step(batch(fallen))  # later steps run eagerly, without another attempt
    assert len(caplog.records) == 1


def test_an_error_of_the_model_itself_still_propagates():
    method = make("simclr")
    engine = Engine(method, method, build_optimizer(method), total_steps=1, compile=True)
    wrong = {"views": [torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)]}  # the backbone takes 1 channel
    with pytest.raises(RuntimeError, match="channels"):
        engine.train_step(wrong)


def test_channels_last_changes_layout_not_results():
    plain, nhwc = make("byol"), make("byol")
    assert has_conv2d(nhwc) and not has_conv2d(make("tjepa"))
    to_channels_last(nhwc)
    conv = next(m for m in nhwc.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    data = batch(plain)
    _, expected = step(plain, data)
    engine, got = step(nhwc, data, channels_last=True)
    assert engine._to_device(data)["views"][0].is_contiguous(memory_format=torch.channels_last)
    assert got == pytest.approx(expected, rel=1e-5)
    assert close(nhwc, plain, 1e-4)  # NHWC convolutions sum in another order


@pytest.mark.parametrize("name", ["ijepa", "mae", "tjepa", "sjepa"])
def test_activation_checkpointing_gives_the_same_gradients(name):
    plain, checkpointed = make(name), make(name)
    reached = enable_grad_checkpointing(checkpointed)
    assert reached >= 2  # the encoder and the predictor or decoder (and the JEPAs' EMA target)
    data = batch(plain)
    for method in (plain, checkpointed):
        torch.manual_seed(3)
        method(copy.deepcopy(data))["loss"].backward()
    for (key, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        assert (a.grad is None) == (b.grad is None), key
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-7), key


def test_activation_checkpointing_reaches_nothing_in_a_small_cnn():
    assert enable_grad_checkpointing(build_backbone("cnn", (1, 8, 8), 8, 4, 2)) == 0


def test_fused_adamw_is_the_default_on_cuda_only_and_steps_the_same():
    method = make("vicreg")
    assert not build_optimizer(method).defaults["fused"]
    plain, fused = make("vicreg"), make("vicreg")
    data = batch(plain)
    step(plain, data)
    engine = Engine(fused, fused, build_optimizer(fused, "adamw", lr=1e-5, fused=True), total_steps=2)
    torch.manual_seed(3)
    engine.train_step(copy.deepcopy(data))
    assert engine.optimizer.defaults["fused"]
    assert close(fused, plain, 1e-6)


def test_ijepa_predicts_all_target_blocks_in_one_batch_as_one_call_per_block_would():
    method = make("ijepa")
    data = batch(method)
    x, context, blocks = data["views"][0], data["context"], data["targets"]
    s_y = torch.nn.functional.layer_norm(method.target.tokens(x), (method.backbone.embed_dim,))
    s_x = method.backbone.tokens(x, keep=context)
    per_block = sum(((method.predictor(s_x, context, b) - select(s_y, b)) ** 2).mean() for b in blocks) / len(blocks)
    assert method(data)["loss"].item() == pytest.approx(per_block.item(), rel=1e-5)


@pytest.mark.parametrize("name", ["ijepa", "mae", "tjepa", "sjepa"])
def test_every_attention_path_uses_scaled_dot_product_attention(name):
    from timm.layers import Attention as TimmLayersAttention
    from timm.models.vision_transformer import Attention

    attention = [m for m in make(name).modules() if isinstance(m, (Attention, TimmLayersAttention))]
    assert attention and all(m.fused_attn for m in attention)
    assert not [m for m in make(name).modules() if isinstance(m, nn.MultiheadAttention)]
