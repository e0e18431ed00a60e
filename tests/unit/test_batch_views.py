"""The paper recipes as batched ops on the device (``data.augment_on: device``): each photometric op
matches torchvision's per-sample formula, the crop geometry is exact, every choice is drawn per
sample with the recipe's probability, and the recipes make the views torchvision's pipelines make
(shapes, range, DINO's local crops)."""

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from selfsup.data.batch_views import BatchViews, brightness, contrast, gaussian_blur, grayscale, hue, resized_crop, saturation
from selfsup.data.views import RECIPES, build_views

PAPER = sorted(set(RECIPES) - {"signal", "scarf", "none", "light"})


def images(n=4, c=3, size=16, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("op, reference, factors", [
    (brightness, TF.adjust_brightness, [0.6, 1.0, 1.4, 1.8]),
    (contrast, TF.adjust_contrast, [0.2, 0.9, 1.0, 1.8]),
    (saturation, TF.adjust_saturation, [0.2, 0.7, 1.0, 1.8]),
    (hue, TF.adjust_hue, [-0.5, -0.1, 0.0, 0.35]),
])
def test_each_jitter_op_is_torchvisions_with_a_factor_per_sample(op, reference, factors):
    x = images()
    f = torch.tensor(factors)
    got = op(x, f if op is hue else f.view(-1, 1, 1, 1))
    expected = torch.stack([reference(xi, fi) for xi, fi in zip(x, factors)])
    assert torch.allclose(got, expected, atol=2e-5 if op is hue else 1e-6)


def test_grayscale_and_blur_are_torchvisions():
    x = images()
    assert torch.allclose(grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6)
    sigmas = [0.1, 0.7, 1.3, 2.0]
    got = gaussian_blur(x, 5, torch.tensor(sigmas))
    expected = torch.stack([TF.gaussian_blur(xi, [5, 5], [s, s]) for xi, s in zip(x, sigmas)])
    assert torch.allclose(got, expected, atol=1e-6)


def test_a_full_crop_is_the_image_or_its_mirror():
    torch.manual_seed(0)
    x = images(n=64)
    out = resized_crop(x, 16, (1.0, 1.0), (1.0, 1.0), flip=True)
    same = (out - x).abs().amax(dim=(1, 2, 3)) < 1e-5
    mirrored = (out - x.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert bool((same | mirrored).all()) and 15 < int(mirrored.sum()) < 49
    assert torch.allclose(resized_crop(x, 8, (1.0, 1.0), (1.0, 1.0), flip=False), torch.nn.functional.avg_pool2d(x, 2), atol=1e-5)


@pytest.mark.parametrize("recipe", PAPER)
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_batched_recipes_make_the_views_torchvision_makes(recipe, shape):
    n_views = 1 if recipe in ("crop", "mae") else 2
    views = build_views(recipe, shape, n_views, local_crops=3, batched=True)
    assert isinstance(views, BatchViews)
    torch.manual_seed(0)
    x = torch.rand(6, *shape).repeat(2, 1, 1, 1)  # every image twice: each copy gets its own draws
    out = views(x)
    reference = build_views(recipe, shape, n_views, local_crops=3)(x)
    assert [v.shape for v in out] == [v.shape for v in reference]
    assert all(float(v.min()) >= 0 and float(v.max()) <= 1 for v in out)
    assert not torch.allclose(out[0][:6], out[0][6:])


def test_choices_are_drawn_per_sample_with_the_recipes_probabilities():
    torch.manual_seed(0)
    n = 4000
    x = torch.rand(1, 3, 8, 8).expand(n, -1, -1, -1).contiguous()
    first, second = build_views("byol", (3, 8, 8), 2, batched=True)(x)
    gray = lambda v: ((v[:, 0] - v[:, 1]).abs().amax(dim=(1, 2)) < 1e-6) & ((v[:, 1] - v[:, 2]).abs().amax(dim=(1, 2)) < 1e-6)  # noqa: E731
    assert abs(float(gray(first).float().mean()) - 0.2) < 0.03  # grayscale p = 0.2
    # BYOL's asymmetric blur and solarize probabilities
    pipelines = build_views("byol", (3, 8, 8), 2, batched=True).pipelines
    assert (pipelines[0].solarize_p, pipelines[1].solarize_p, pipelines[0].blur_p, pipelines[1].blur_p) == (0.0, 0.2, 1.0, 0.1)


def test_same_seed_same_views_on_the_batchs_device():
    x = images(n=8)
    views = build_views("dino", (3, 16, 16), 2, local_crops=2, batched=True)
    torch.manual_seed(5)
    a = views(x)
    torch.manual_seed(5)
    b = views(x)
    assert all(torch.equal(u, v) and u.device == x.device for u, v in zip(a, b))
    assert [v.shape[-1] for v in a] == [16, 16, 7, 7]
