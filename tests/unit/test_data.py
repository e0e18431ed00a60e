import numpy as np
import pytest
import torch

from selfsup.data.datasets import DataError, digits, npz
from selfsup.data.views import RECIPES, RandomViews, build_views


def test_digits_fixed_split():
    a, b = digits(), digits()
    assert a.shape == (1, 8, 8) and len(a.train.x) + len(a.test.x) == 1797
    assert torch.equal(a.test.y, b.test.y) and 0.0 <= float(a.train.x.min()) and float(a.train.x.max()) <= 1.0


def test_npz_with_and_without_test_split(tmp_path):
    x = np.random.rand(50, 6, 6).astype(np.float32)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(50) % 3)
    d = npz(str(tmp_path / "a.npz"), test_fraction=0.2)
    assert d.shape == (1, 6, 6) and len(d.test.x) == 10 and d.has_labels
    np.savez(tmp_path / "b.npz", x=x[:, None], x_test=x[:5, None])
    d = npz(str(tmp_path / "b.npz"))
    assert len(d.train.x) == 50 and len(d.test.x) == 5 and not d.has_labels


@pytest.mark.parametrize(
    "arrays, expected",
    [
        ({"images": np.zeros((4, 8, 8))}, "missing key 'x'"),
        ({"x": np.zeros((4, 8))}, "x: expected images of shape"),
        ({"x": np.zeros((4, 8, 8)), "y": np.zeros(3, dtype=int)}, "y: expected shape (4,)"),
        ({"x": np.zeros((4, 8, 8)), "y": np.zeros(4)}, "y: expected integer class labels"),
        ({"x": np.full((4, 8, 8), np.nan)}, "x: contains NaN"),
    ],
)
def test_npz_errors_name_file_and_key(tmp_path, arrays, expected):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as exc:
        npz(str(tmp_path / "bad.npz"))
    assert str(exc.value).startswith(str(tmp_path / "bad.npz")) and expected in str(exc.value)


def test_corrupt_npz(tmp_path):
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        npz(str(tmp_path / "c.npz"))


def test_identity_view_when_no_augmentation():
    x = torch.rand(5, 1, 8, 8)
    views = RandomViews(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, noise_std=0.0)
    for v in views(x):
        assert torch.allclose(v, x, atol=1e-5)


def test_flip_and_crop_shapes_and_randomness():
    x = torch.rand(64, 3, 8, 8)
    full_flip = RandomViews(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=True, noise_std=0.0)
    v = full_flip.view(x, torch.Generator().manual_seed(0))
    flipped = torch.all(torch.isclose(v, x.flip(-1), atol=1e-5).flatten(1), dim=1)
    same = torch.all(torch.isclose(v, x, atol=1e-5).flatten(1), dim=1)
    assert bool((flipped | same).all()) and 10 < int(flipped.sum()) < 54
    a, b = RandomViews()(x)
    assert a.shape == x.shape and not torch.allclose(a, b)


def test_none_recipe_passes_the_samples_unchanged():
    x = torch.rand(4, 3, 8, 8)
    out = build_views("none", (3, 8, 8), 1)(x)
    assert len(out) == 1 and out[0] is x


@pytest.mark.parametrize("recipe", sorted(set(RECIPES) - {"signal", "scarf", "none"}))
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_recipes_make_views_of_the_right_shapes(recipe, shape):
    torch.manual_seed(0)
    x = torch.rand(6, *shape)
    n_views = 1 if recipe in ("crop", "mae") else 2
    views = build_views(recipe, shape, n_views, local_crops=3)
    out = views(x)
    n_local = 3 if recipe == "dino" else 0
    assert len(out) == n_views + n_local
    for v in out[:n_views]:
        assert v.shape == x.shape and v.dtype == torch.float32
    small = max(4, round(shape[1] * 96 / 224))
    for v in out[n_views:]:
        assert v.shape == (6, shape[0], small, small)
    if recipe != "light":
        assert all(float(v.min()) >= -1e-5 and float(v.max()) <= 1 + 1e-5 for v in out)  # photometric ops stay in range
    assert not torch.allclose(out[0], x)


def test_byol_recipe_is_asymmetric():
    views = build_views("byol", (3, 32, 32), 2)
    blur = lambda p: [t for t in p.transforms if type(t).__name__ == "RandomApply" and "GaussianBlur" in repr(t)][0].p  # noqa: E731
    first, second = views.pipelines
    assert (blur(first), blur(second)) == (1.0, 0.1)
    assert any(type(t).__name__ == "RandomSolarize" for t in second.transforms)
    assert not any(type(t).__name__ == "RandomSolarize" for t in first.transforms)


def epoch_views(loader_workers: int, epochs: range) -> list[torch.Tensor]:
    """The views of every batch of ``epochs``, as the worker loop makes them (persistent loader
    processes, a DistributedSampler, a random recipe and random masks in the collate)."""
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    from selfsup.data.views import SeededBatches, SeededSamples, ViewCollate

    def masks(b):
        return {"context": torch.rand(b, 16).argsort(dim=1)[:, :4]}

    dataset = TensorDataset(torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    batches = SeededBatches(DistributedSampler(dataset, num_replicas=1, rank=0, seed=3), 8, seed=7)
    collate = ViewCollate(lambda x: [x + torch.randn_like(x), x.flip(-1) * torch.rand(len(x), 1, 1, 1)], masks)
    loader = DataLoader(SeededSamples(dataset), batch_sampler=batches, collate_fn=collate, num_workers=loader_workers,
                        persistent_workers=loader_workers > 0)
    out = []
    for epoch in epochs:
        torch.manual_seed(epoch)
        batches.set_epoch(epoch)
        for batch in loader:
            out.append(torch.cat([v.flatten() for v in batch["views"]] + [batch["context"].flatten().float()]))
    return out


def test_views_replay_after_a_resume_with_persistent_loader_processes():
    """Persistent DataLoader processes are seeded once, when they start: before, a run resumed at
    epoch 3 drew other views than the uninterrupted run in its epochs 3-4. Each batch is now drawn
    from a seed of (seed, epoch, batch): the resumed epochs equal the uninterrupted ones, and the
    number of loader processes (0 or 2) changes nothing."""
    straight = epoch_views(2, range(1, 5))
    resumed = epoch_views(2, range(3, 5))
    assert len(straight) == 20 and len(resumed) == 10
    assert all(torch.equal(a, b) for a, b in zip(straight[10:], resumed))
    assert all(torch.equal(a, b) for a, b in zip(straight, epoch_views(0, range(1, 5))))
    assert not torch.equal(straight[0], straight[5])  # epochs differ
