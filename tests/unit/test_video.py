"""The video modality (``selfsup.modalities.video``) and its methods: moving digits, ``.npz`` clips
and video files decoded with PyAV; temporally consistent views and CVRL's temporal crops; tube and
spatio-temporal block masks; the video ViT's tubelets and 3-D positions; CVRL's and VCOP's losses by
hand; and each video method learning on moving digits above the raw-pixel baseline."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from selfsup.config import build_experiment, views_of
from selfsup.data.clip_views import ClipViews, interval_starts, take_frames
from selfsup.data.masks import SpatioTemporalBlocks, TubeMasks, mask_maker
from selfsup.data.splits import DataError
from selfsup.data.videos import bounce, moving_digits, video_folder, video_npz, write_video
from selfsup.data.views import ViewCollate
from selfsup.methods import build_method
from selfsup.methods.simclr import nt_xent_loss
from selfsup.methods.vcop import cut_clips, vcop_loss
from selfsup.metrics.panel import evaluate
from selfsup.metrics.probes import linear_probe
from selfsup.models.backbones import build_backbone
from selfsup.models.tokens import sincos_pos_embed
from selfsup.train.engine import Engine, build_optimizer


@pytest.fixture(scope="module")
def clips():
    return moving_digits(clip_frames=8, frame_size=24)


def test_moving_digits_move_bounce_and_repeat_by_seed(clips):
    assert clips.shape == (1, 8, 24, 24) and len(clips.train.x) + len(clips.test.x) == 1797
    x = clips.train.x
    assert torch.equal(x, moving_digits(clip_frames=8, frame_size=24).train.x)
    assert not torch.equal(x, moving_digits(clip_frames=8, frame_size=24, split_seed=1).train.x)
    assert (x[:, :, :1] != x[:, :, 1:]).flatten(1).any(dim=1).all()  # every digit moves
    ink = x.sum(dim=(1, 3, 4))  # (N, T): the whole digit stays on the canvas in every frame
    assert torch.allclose(ink, ink[:, :1].expand_as(ink), rtol=1e-5)
    assert sorted(clips.train.y.unique().tolist()) == list(range(10))
    np.testing.assert_allclose(bounce(np.array([1.0]), np.array([3.0]), np.arange(5), 4), [[1, 4, 1, 2, 3]])


def test_video_npz_reads_clips_and_names_a_bad_array(tmp_path):
    np.savez(tmp_path / "c.npz", x=np.random.rand(10, 4, 6, 6).astype(np.float32), y=np.arange(10) % 2)
    d = video_npz(str(tmp_path / "c.npz"))
    assert d.shape == (1, 4, 6, 6) and d.has_labels
    np.savez(tmp_path / "bad.npz", x=np.random.rand(10, 6, 6))
    with pytest.raises(DataError, match=r"bad.npz: x: expected videos of shape \(N,T,H,W\)"):
        video_npz(str(tmp_path / "bad.npz"))


def test_video_folder_decodes_streams_and_skips_or_names_a_damaged_file(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("jump", "walk"):
        (tmp_path / c).mkdir()
        for i in range(3):
            frames = np.full((12, 32, 32, 3), 40 * i + (0 if c == "jump" else 120), dtype=np.uint8)
            frames[:, :4] = rng.integers(0, 256, size=(12, 4, 32, 3), dtype=np.uint8)
            write_video(tmp_path / c / f"{i}.mp4", frames)
    d = video_folder(str(tmp_path), clip_frames=5, frame_stride=2, frame_size=16)
    assert d.shape == (3, 5, 16, 16) and d.train.x.dtype == torch.float32 and 0 <= d.train.x.min() <= d.train.x.max() <= 1
    assert sorted(torch.cat([d.train.y, d.test.y]).tolist()) == [0, 0, 0, 1, 1, 1]
    short = video_folder(str(tmp_path), clip_frames=20, frame_size=16)  # 12 frames: the last repeats
    assert torch.equal(short.train.x[:, :, 11], short.train.x[:, :, 19])
    (tmp_path / "walk" / "broken.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match=r"broken.mp4: not a readable video"):
        video_folder(str(tmp_path), clip_frames=5, frame_size=16)
    streamed = video_folder(str(tmp_path), clip_frames=5, frame_size=16, stream=True, on_bad_file="skip", test_fraction=0.01)
    items = [streamed.train.x[i] for i in range(len(streamed.train.x))]
    assert sum(not torch.is_tensor(s) for s in items) == 1 and all(s.shape == (3, 5, 16, 16) for s in items if torch.is_tensor(s))


def test_a_view_transforms_every_frame_of_a_clip_alike():
    still = torch.rand(4, 3, 1, 16, 16).expand(4, 3, 6, 16, 16).contiguous()  # the same frame six times
    for view in ClipViews(n_views=2, frames=None)(still) + ClipViews(n_views=2, frames=3)(still):
        assert torch.allclose(view, view[:, :, :1].expand_as(view))
    a, b = ClipViews(n_views=2)(still)
    assert not torch.allclose(a, b)  # two views differ


def test_temporal_crops_follow_cvrls_decreasing_interval():
    torch.manual_seed(0)
    starts = interval_starts(20000, 16, 4)
    assert starts.min() >= 0 and starts.max() <= 12
    gap = (starts[:, 1] - starts[:, 0]).abs().float()
    # density 2(1 - k) on [0, 1] scaled to 12 frames: mean 12/3, against 12/2 for a uniform interval
    assert gap.mean().item() == pytest.approx(4.0, abs=0.1)
    assert (gap <= 6).float().mean().item() == pytest.approx(1 - (1 - 6.5 / 12) ** 2, abs=0.02)  # round(12 k) <= 6: k < 6.5/12
    x = torch.arange(2 * 10).float().view(2, 1, 10, 1, 1).expand(2, 1, 10, 2, 2)
    out = take_frames(x, torch.tensor([3, 6]), 4)
    assert out.shape == (2, 1, 4, 2, 2) and out[0, 0, :, 0, 0].tolist() == [3, 4, 5, 6] and out[1, 0, :, 0, 0].tolist() == [16, 17, 18, 19]


def test_tube_masks_hide_the_same_patches_in_every_frame():
    visible, masked = mask_maker("random", (3, 4, 4), 0.75)(5)
    assert visible.shape == (5, 3 * 4) and masked.shape == (5, 3 * 12)
    plane = masked.view(5, 3, 12) % 16
    assert (plane == plane[:, :1]).all() and (masked.view(5, 3, 12) // 16 == torch.arange(3)[None, :, None]).all()
    assert isinstance(mask_maker("random", (3, 4, 4)), TubeMasks)


def test_spatio_temporal_blocks_are_tubes_outside_the_context():
    maker = mask_maker("blocks", (2, 6, 6), (0.85, 1.0), (0.15, 0.2), (0.75, 1.5), 2, 4)
    assert isinstance(maker, SpatioTemporalBlocks)
    context, targets = maker(4)
    for b in range(4):
        ctx = set(context[b].tolist())
        for t in targets:
            cells = t[b].tolist()
            assert not ctx & set(cells)
            assert {c % 36 for c in cells if c < 36} == {c % 36 for c in cells if c >= 36}  # the same cells at both time steps


def test_3d_positions_give_time_half_the_channels():
    pos = sincos_pos_embed(8, (2, 1, 3))  # time: 4 channels (omega 1, 1/100), rows and columns 2 each (omega 1)
    t, col = 1, 2  # token (t=1, row 0, col 2) is index 1 * 3 + 2
    expected = [math.sin(t), math.sin(t / 100), math.cos(t), math.cos(t / 100), 0.0, 1.0, math.sin(col), math.cos(col)]
    assert pos[5].tolist() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="divisible by 8"):
        sincos_pos_embed(12, (2, 2, 2))


def test_video_vit_tubelets_positions_and_kept_tokens():
    torch.manual_seed(0)
    vit = build_backbone("vit3d", (3, 4, 8, 8), 16, 0, 1, heads=2, patch_size=4, tubelet=2)
    assert vit.grid == (2, 2, 2) and vit.patch_dim == 2 * 4 * 4 * 3
    x = torch.rand(2, 3, 4, 8, 8)
    patches = vit.patchify(x)
    assert patches.shape == (2, 8, 96)
    # token 5 = (t=1, row 0, col 1): frames 2-3, rows 0-3, columns 4-7, values (t, p, p, C)
    assert torch.equal(patches[0, 5], x[0, :, 2:4, 0:4, 4:8].permute(1, 2, 3, 0).flatten())
    keep = torch.tensor([[0, 5], [1, 7]])
    assert vit.tokens(x, keep=keep).shape == (2, 2, 16) and vit(x).shape == (2, 16)
    assert vit(torch.rand(2, 3, 2, 8, 8)).shape == (2, 16)  # a shorter temporal crop
    with pytest.raises(ValueError, match="tubelets of 2x4x4"):
        build_backbone("vit3d", (3, 5, 8, 8), 16, 0, 1, heads=2, patch_size=4, tubelet=2)


def test_cvrl_loss_is_infonce_over_the_clips_of_the_batch():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    tau = 0.5
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = (z @ z.T / tau).tolist()
    terms = []
    for i, j in [(0, 2), (1, 3), (2, 0), (3, 1)]:
        terms.append(-sim[i][j] + math.log(sum(math.exp(sim[i][k]) for k in range(4) if k != i)))
    assert nt_xent_loss(z1, z2, tau).item()  # CVRL's step is SimCLR's == pytest.approx(sum(terms) / 4, rel=1e-6)


def test_vcop_cuts_tuples_and_scores_the_order():
    x = torch.arange(12).float().view(1, 1, 12, 1, 1).expand(2, 1, 12, 1, 1)
    clips = cut_clips(x, torch.tensor([0, 3]), 3, 2, 1)  # (B, n, C, frames, H, W)
    assert clips.shape == (2, 3, 1, 2, 1, 1)
    assert clips[0, :, 0, :, 0, 0].tolist() == [[0, 1], [3, 4], [6, 7]] and clips[1, :, 0, :, 0, 0].tolist() == [[3, 4], [6, 7], [9, 10]]
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    expected = ((-2 + math.log(math.exp(2) + 2)) + (-1 + math.log(math.exp(1) + 2))) / 2
    assert vcop_loss(logits, torch.tensor([0, 1])).item() == pytest.approx(expected, rel=1e-6)


def test_video_configs_take_the_modalitys_recipes_keys_and_backbones():
    base = {"data": {"name": "moving_digits", "clip_frames": 8, "frame_size": 24}, "model": {"backbone": "cnn3d"}}
    assert views_of(build_experiment({**base, "method": {"name": "cvrl"}}, "v.yaml")) == "video"
    assert views_of(build_experiment({**base, "method": {"name": "vicreg"}}, "v.yaml")) == "video"
    vit = {"backbone": "vit3d", "embed_dim": 64, "heads": 4, "patch_size": 8, "tubelet": 2}
    assert views_of(build_experiment({**base, "model": vit, "method": {"name": "mae"}}, "v.yaml")) == "clip"
    for tree, message in [
        ({**base, "method": {"name": "vcop"}, "model": {"backbone": "cnn"}}, "model.backbone 'cnn' does not suit 'moving_digits' data"),
        ({"data": {"name": "digits"}, "method": {"name": "cvrl"}}, "method 'cvrl' is for videos, not images"),
        ({"data": {"name": "digits", "clip_frames": 8}}, "data.clip_frames applies to videos, not images"),
        ({"data": {"name": "digits"}, "model": {"backbone": "cnn", "tubelet": 4}}, "model.tubelet applies to videos, not images"),
        ({**base, "method": {"name": "mae"}}, "method 'mae' needs a ViT: model.backbone vit3d"),
        ({"data": {"name": "mnist1d"}, "model": {"backbone": "cnn1d"}, "method": {"name": "mae"}}, "method 'mae' is for images or videos, not signals"),
        ({"data": {**base["data"], "view_frames": 12}, "model": {"backbone": "cnn3d"}}, "data.view_frames 12 exceeds the clip's 8 frames"),
    ]:
        with pytest.raises(Exception, match=message):
            build_experiment(tree, "v.yaml")


CNN3D = dict(name="cnn3d", embed_dim=64, width=16, depth=3)
VIT3D = dict(name="vit3d", embed_dim=48, width=0, depth=2, heads=3, patch_size=6, tubelet=2)


def learn(name, clips, params, epochs, backbone=CNN3D):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    method = build_method(name, build_backbone(in_shape=clips.shape, **backbone), **params)
    views = ClipViews(method.n_views, clips.shape[1] // 2 if method.n_views == 2 else None, (0.5, 1.0), (0.75, 1.33), False, 0.0)
    probe = (clips.train.x, clips.train.y, clips.test.x, clips.test.y)
    before = evaluate(method, clips.train.x[:512], "cpu", probe)
    loader = DataLoader(TensorDataset(clips.train.x), batch_size=128, shuffle=True, drop_last=True, collate_fn=ViewCollate(views, method.masks()))
    engine = Engine(method, method, build_optimizer(method, lr=3e-3, weight_decay=1e-4), total_steps=epochs * len(loader), warmup_steps=len(loader))
    losses = [sum(engine.train_step(b)["loss"] for b in loader) / len(loader) for _ in range(epochs)]
    return before, evaluate(method, clips.train.x[:512], "cpu", probe), losses


def raw_pixels(clips) -> float:
    return linear_probe(clips.train.x.flatten(1).numpy(), clips.train.y.numpy(), clips.test.x.flatten(1).numpy(), clips.test.y.numpy())


def test_cvrl_learns_on_moving_digits(clips):
    """Two temporal crops of a clip as the positive pair: the linear probe of the pooled 3-D CNN
    features (0.76) beats raw pixels (0.61: a moving digit covers other pixels in every clip) and
    the network at initialisation (0.35) by far, and the projections do not collapse."""
    before, after, losses = learn("cvrl", clips, dict(projector=[128, 64], temperature=0.2), 4, backbone={**CNN3D, "width": 8})
    assert after["probe/linear_acc"] > raw_pixels(clips) + 0.1 and after["probe/linear_acc"] > before["probe/linear_acc"] + 0.1
    assert after["label_free/rankme_projector"] > 8 and losses[-1] < 0.75 * losses[0]


def test_vcop_learns_on_moving_digits(clips):
    """Ordering three 2-frame clips: the loss falls below chance's log(3!) (a bouncing digit moves
    alike backwards, so log 2 is the floor) and the probe rises above raw pixels and the random
    network, by less than CVRL's (VCOP is the weaker pretext task, as in the study of arXiv
    2504.06153: ordering positions needs where the digit is more than which digit it is)."""
    before, after, losses = learn("vcop", clips, dict(clip_frames=2, gap=1, dropout=0.0), 6)
    assert losses[-1] < math.log(6) - 0.1
    assert after["probe/linear_acc"] > max(raw_pixels(clips), before["probe/linear_acc"]) + 0.02
    assert after["label_free/rankme"] > before["label_free/rankme"]


@pytest.mark.parametrize("name,params", [
    ("mae", dict(mask_ratio=0.9, decoder_dim=48, decoder_depth=1, decoder_heads=3, norm_pix_loss=False)),
    ("ijepa", dict(predictor_dim=48, predictor_depth=1, predictor_heads=3, n_pred=2, min_keep=4)),
])
def test_masked_methods_train_on_clips_with_the_video_masks(clips, name, params):
    """MAE with tube masks (VideoMAE) and I-JEPA with spatio-temporal blocks (V-JEPA), no new
    method file: a small video ViT over 2x6x6 tubelets; the objective falls and the probe stays
    far above chance (0.1), which a collapsed encoder cannot do."""
    before, after, losses = learn(name, clips, params, 4, backbone=VIT3D)
    assert losses[-1] < 0.8 * losses[0]
    assert after["probe/linear_acc"] > 0.4


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_a_video_folder_round_trips_through_shards(tmp_path, fmt):
    """`selfsup shard` of a video folder: the videos' own bytes in shards, read back by data.name:
    video_shards as video_folder decodes the files; the image reader refuses them, naming the other."""
    from selfsup.cli import main
    from selfsup.data.shards import read_shards

    rng = np.random.default_rng(1)
    for c in ("a", "b"):
        (tmp_path / "v" / c).mkdir(parents=True)
        for i in range(3):
            write_video(tmp_path / "v" / c / f"{i}.mp4", rng.integers(0, 256, size=(6, 16, 16, 3), dtype=np.uint8))
    assert main(["shard", str(tmp_path / "v"), "--out", str(tmp_path / "s"), "--format", fmt, "--shard-size", "4"]) == 0
    folder, shards = video_folder(str(tmp_path / "v"), 4, 1, 8), read_shards(str(tmp_path / "s"), clip=(4, 1, 8), stream=True)
    assert shards.shape == (3, 4, 8, 8)
    clips = lambda d: sorted((round(float(x.sum()), 2), int(y)) for x, y in zip(torch.cat([d.train.x[:], d.test.x[:]]), torch.cat([d.train.y, d.test.y])))  # noqa: E731
    assert clips(shards) == clips(folder)
    with pytest.raises(DataError, match=r"s: its shards hold videos: read them with data.name: video_shards$"):
        read_shards(str(tmp_path / "s"))
