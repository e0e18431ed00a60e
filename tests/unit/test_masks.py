"""Property tests of the masks over many seeds: I-JEPA's multi-block masks (paper settings, 14x14
grid), MAE's random masks, T-JEPA's feature subsets and the signal JEPA's time blocks."""

import math

import pytest
import torch

from selfsup.data.masks import FeatureMasks, MultiBlockMasks, RandomPatchMasks, TimeBlockMasks

GRID = (14, 14)  # ViT-H/14 at 224 px in the paper; ViT/16 at 224 px gives the same grid


@pytest.mark.parametrize("seed", range(100))
def test_counts_bounds_disjointness_min_keep(seed):
    masks = MultiBlockMasks(GRID, min_keep=10)
    context, targets = masks(batch_size=8, generator=torch.Generator().manual_seed(seed))
    n = GRID[0] * GRID[1]
    assert len(targets) == 4
    assert context.shape[0] == 8 and context.shape[1] >= 10
    for t in [context, *targets]:
        assert t.dtype == torch.int64 and int(t.min()) >= 0 and int(t.max()) < n
        for row in t:
            assert torch.equal(row, row.unique())  # sorted, no repeats
    for b in range(8):
        ctx = set(context[b].tolist())
        for t in targets:
            assert not ctx & set(t[b].tolist()), "context and target patches must not overlap"


@pytest.mark.parametrize("seed", range(100))
def test_block_sizes_follow_the_paper_ranges(seed):
    masks = MultiBlockMasks(GRID)
    g = torch.Generator().manual_seed(seed)
    h, w = masks.block_size((0.15, 0.2), (0.75, 1.5), g)
    area = GRID[0] * GRID[1]
    # rounding h and w to whole patches moves the area by at most about one row and one column
    assert 0.15 * area - (h + w) <= h * w <= 0.2 * area + (h + w)
    assert 0.75 * w - 1 <= h <= 1.5 * w + 1
    h, w = masks.block_size((0.85, 1.0), (1.0, 1.0), g)
    assert h == w and h * w >= 0.85 * area - 2 * h


def test_targets_are_rectangles_before_truncation():
    masks = MultiBlockMasks((8, 8), n_pred=2)
    context, targets = masks._sample((2, 3), (8, 8), torch.Generator().manual_seed(0))
    for t in targets:
        rows, cols = t // 8, t % 8
        assert len(t) == 6 and len(rows.unique()) == 2 and len(cols.unique()) == 3
    assert len(context) == 64 - len(set(torch.cat(targets).tolist()))


def test_same_amount_masked_across_the_batch():
    context, targets = MultiBlockMasks(GRID)(batch_size=16, generator=torch.Generator().manual_seed(1))
    assert context.dim() == 2 and all(t.shape[0] == 16 and t.dim() == 2 for t in targets)
    # every block is cut to the batch's shortest block (the reference collator), so the n_pred
    # blocks stack into one predictor batch
    assert len({t.shape[1] for t in targets}) == 1


def test_impossible_min_keep_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no context of at least 1000 patches"):
        MultiBlockMasks((4, 4), min_keep=1000)(batch_size=1, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("seed", range(100))
def test_random_patch_masks_partition_the_grid(seed):
    visible, masked = RandomPatchMasks((6, 5), ratio=0.75)(4, torch.Generator().manual_seed(seed))
    assert visible.shape == (4, 8) and masked.shape == (4, 22)  # round(0.75 * 30) = 22 hidden
    for v, m in zip(visible, masked):
        assert sorted(v.tolist() + m.tolist()) == list(range(30))  # disjoint, together every patch
        assert torch.equal(v, v.sort().values) and torch.equal(m, m.sort().values)
    assert not torch.equal(masked[0], masked[1]) or not torch.equal(masked[1], masked[2])  # per-sample draws


@pytest.mark.parametrize("seed", range(50))
def test_feature_masks_follow_the_shares_and_never_overlap_the_context(seed):
    g = torch.Generator().manual_seed(seed)
    n = 30
    context, targets = FeatureMasks(n, (0.2, 0.4), (0.2, 0.4), n_pred=4)(8, g)
    assert len(targets) == 4
    assert round(0.2 * n) <= context.shape[1] <= round(0.4 * n)
    for row in range(8):
        ctx = set(context[row].tolist())
        assert len(ctx) == context.shape[1] and context[row].tolist() == sorted(ctx)
        for t in targets:
            tgt = t[row].tolist()
            assert round(0.2 * n) <= len(tgt) <= round(0.4 * n) and tgt == sorted(set(tgt))
            assert not ctx & set(tgt) and all(0 <= j < n for j in tgt)


def test_feature_masks_on_a_narrow_table_keep_one_target_column():
    context, targets = FeatureMasks(2, (0.9, 0.95), (0.9, 0.95), n_pred=2)(5)
    assert context.shape == (5, 1) and all(t.shape == (5, 1) for t in targets)
    assert all(set(context[i].tolist()) | set(targets[0][i].tolist()) == {0, 1} for i in range(5))


@pytest.mark.parametrize("seed", range(50))
def test_time_block_masks_partition_the_patches_in_long_blocks(seed):
    g = torch.Generator().manual_seed(seed)
    n, min_block = 200, 10  # a 10 s ECG at 500 Hz in patches of 25 samples
    context, (hidden,) = TimeBlockMasks(n, (0.15, 0.25), min_block)(6, g)
    assert math.ceil(0.15 * n) <= context.shape[1] <= math.ceil(0.25 * n)
    assert context.shape[1] + hidden.shape[1] == n
    for row in range(6):
        assert sorted(context[row].tolist() + hidden[row].tolist()) == list(range(n))
        runs, run = [], 1
        h = hidden[row].tolist()
        for a, b in zip(h, h[1:]):
            if b == a + 1:
                run += 1
            else:
                runs.append(run)
                run = 1
        runs.append(run)
        assert min(runs) >= min_block  # every hidden stretch is at least one block long


def test_time_block_masks_with_fewer_hidden_patches_than_a_block():
    context, (hidden,) = TimeBlockMasks(10, (0.7, 0.7), min_block=5)(3)
    assert context.shape == (3, 7) and hidden.shape == (3, 3)
    assert all(hidden[i].tolist() == list(range(hidden[i, 0], hidden[i, 0] + 3)) for i in range(3))  # one contiguous block
