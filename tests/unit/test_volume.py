"""The volume modality (``selfsup.modalities.volume``) and its method: generated volumes, ``.npz``
and NIfTI files (streamed, a damaged one skipped or named); the 3-D crops by hand and the ``slices``
recipe keeping slices aligned; the volume backbones; SwAV's Sinkhorn codes, swapped prediction and
the masked slices' loss of the joint image-volume method by hand; VICReg and the joint method
learning on generated volumes above the raw voxels' probe, MAE training through the 3-D masks."""

import numpy as np
import pytest
import torch

from selfsup.config import ExperimentConfig, ConfigError, load_experiment
from selfsup.data.splits import DataError
from selfsup.methods import build_method
from selfsup.methods.iicc import masked_slice_loss, sinkhorn, swapped_prediction_loss
from selfsup.modalities import load_dataset
from selfsup.modalities.volume import VolumeViews, crop_theta, nifti_folder, synthetic_volumes, volume_npz, write_nifti
from selfsup.models.backbones import build_backbone
from tests.unit.learning import learn, raw_probe


@pytest.fixture(scope="module")
def volumes():
    return synthetic_volumes(n=800, size=16)



def test_synthetic_volumes_are_balanced_bounded_repeatable_and_hard_for_raw_voxels(volumes):
    assert volumes.shape == (1, 16, 16, 16) and len(volumes.train.x) == 640
    assert 0.0 <= float(volumes.train.x.min()) and float(volumes.train.x.max()) <= 1.0
    counts = torch.cat([volumes.train.y, volumes.test.y]).bincount()
    assert counts.tolist() == [200, 200, 200, 200]
    again = synthetic_volumes(n=800, size=16)
    assert torch.equal(again.train.x, volumes.train.x) and not torch.equal(synthetic_volumes(n=800, size=16, split_seed=1).train.x[:4],
                                                                             volumes.train.x[:4])
    assert raw_probe(volumes) < 0.4  # 4 classes: shape, not place, size or contrast
    with pytest.raises(DataError, match="data.volume_size 8 is below 12"):
        synthetic_volumes(size=8)


def test_volume_npz_reads_volumes_and_names_a_bad_array(tmp_path):
    np.savez(tmp_path / "v.npz", x=np.random.rand(10, 4, 6, 6), y=np.arange(10) % 2)
    d = volume_npz(str(tmp_path / "v.npz"))
    assert d.shape == (1, 4, 6, 6) and d.has_labels and len(d.train.x) == 8
    np.savez(tmp_path / "bad.npz", x=np.random.rand(10, 6, 6))
    with pytest.raises(DataError, match=r"bad.npz: x: expected volumes of shape \(N,D,H,W\) or \(N,C,D,H,W\), got \(10, 6, 6\)"):
        volume_npz(str(tmp_path / "bad.npz"))


def test_nifti_folders_resample_scale_stream_and_skip_or_name_a_damaged_file(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "v" / c).mkdir(parents=True)
        for i in range(3):
            write_nifti(tmp_path / "v" / c / f"{i}.nii.gz", rng.normal(100, 30, size=(10, 12, 14)))
    write_nifti(tmp_path / "v" / "a" / "multi.nii", rng.random((8, 8, 8, 2)))  # channels last: refused beside 1-channel volumes
    d = nifti_folder(str(tmp_path / "v"), size=8, test_fraction=0.3, stream=True, on_bad_file="skip")
    assert d.shape == (1, 8, 8, 8) and sorted(torch.cat([d.train.y, d.test.y]).tolist()) == [0, 0, 0, 0, 1, 1, 1]
    x, kept, skipped = d.train.x.take(range(len(d.train.x)))
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and x.shape[1:] == (1, 8, 8, 8) and x.dtype == torch.float32
    assert all("multi.nii: 2 channel(s), the folder's first volume has 1" in s.reason for s in skipped) and len(kept) + len(skipped) == len(d.train.x)
    (tmp_path / "v" / "a" / "multi.nii").unlink()
    (tmp_path / "v" / "b" / "0.nii.gz").write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(DataError, match=r"0.nii.gz: not a readable NIfTI volume"):
        load_dataset("nifti", str(tmp_path / "v"), volume_size=8)


def test_crop_theta_by_hand():
    """``u`` = (fraction, ratio, 3 x place, 3 x flip): all of it, unflipped, is the identity; a
    crop of an eighth of the volume has half-sides, placed at the draw's centre; ``depth=False``
    leaves the depth axis (the last of ``affine_grid``'s x, y, z) whole and unflipped."""
    u = torch.tensor([[1.0, 0.5, 0.5, 0.5, 0.5, 0.9, 0.9, 0.9]])
    assert torch.allclose(crop_theta(u, (1.0, 1.0), (1.0, 1.0), True, True), torch.tensor([[[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]]))
    u = torch.tensor([[0.0, 0.5, 1.0, 0.5, 0.0, 0.1, 0.9, 0.1]])
    theta = crop_theta(u, (0.125, 1.0), (1.0, 1.0), True, True)
    assert torch.allclose(theta, torch.tensor([[[-0.5, 0, 0, 0.5], [0, 0.5, 0, 0.0], [0, 0, -0.5, -0.5]]]))
    theta = crop_theta(u, (0.25, 1.0), (1.0, 1.0), True, False)
    assert torch.allclose(theta, torch.tensor([[[-0.5, 0, 0, 0.5], [0, 0.5, 0, 0.0], [0, 0, 1.0, 0.0]]]))


def test_the_slices_recipe_keeps_each_slice_in_place_and_the_volume_recipe_moves_them():
    """Volumes whose slice ``k`` is the constant ``k / D``: in every ``slices`` view slice ``k``
    is still constant ``k / D``; the ``volume`` recipe's depth crops and flips change that."""
    d = 8
    x = (torch.arange(d, dtype=torch.float32) / d).view(1, 1, d, 1, 1).expand(6, 1, d, 8, 8).contiguous()
    torch.manual_seed(0)
    for view in VolumeViews(2, (0.3, 1.0), intensity=0.0, noise_std=0.0, depth=False)(x):
        assert torch.allclose(view, x, atol=1e-6)
    moved = VolumeViews(2, (0.3, 1.0), intensity=0.0, noise_std=0.0)(x)
    assert not all(torch.allclose(v, x, atol=1e-3) for v in moved)


def test_volume_backbones_and_their_checks():
    vit = build_backbone("vit_volume", (1, 16, 16, 16), 48, 0, 2, patch_size=8, heads=3)
    assert vit.grid == (2, 2, 2) and vit.patch_dim == 512 and vit(torch.rand(2, 1, 16, 16, 16)).shape == (2, 48)
    with pytest.raises(ValueError, match=r"volumes of 16x16x12 voxels do not divide into cubes of 8 \(model.patch_size\)"):
        build_backbone("vit_volume", (1, 16, 16, 12), 48, 0, 2, patch_size=8, heads=3)
    slices = build_backbone("slice_cnn", (1, 6, 16, 16), 32, 8, 2, heads=4)
    x = torch.rand(3, 1, 6, 16, 16)
    assert slices.slices(x).shape == (3, 6, 32) and torch.allclose(slices(x), slices.mix(slices.slices(x)).mean(1))
    plain = build_backbone("slice_cnn", (1, 6, 16, 16), 32, 8, 2, slice_layers=0)
    assert torch.allclose(plain(x), plain.slices(x).mean(1))
    with pytest.raises(ValueError, match="model.embed_dim 30 does not divide into model.heads 4"):
        build_backbone("slice_cnn", (1, 6, 16, 16), 30, 8, 2, heads=4)
    assert build_backbone("cnn_volume", (2, 8, 8, 8), 16, 4, 3)(torch.rand(2, 2, 8, 8, 8)).shape == (2, 16)


def test_a_volume_config_picks_its_recipes_and_refuses_what_does_not_apply(tmp_path):
    cfg = ExperimentConfig.model_validate({"name": "v", "data": {"name": "synthetic_volumes", "volume_size": 16},
                                           "model": {"backbone": "cnn_volume"}, "method": {"name": "vicreg"}})
    assert cfg.data.views == "auto"
    (tmp_path / "x.yaml").write_text("name: v\ndata: {name: volume_npz, path: v.npz, volume_size: 16}\nmodel: {backbone: cnn_volume}\n")
    with pytest.raises(ConfigError, match="data.volume_size resamples generated and NIfTI volumes"):
        load_experiment(tmp_path / "x.yaml")
    (tmp_path / "y.yaml").write_text("name: v\ndata: {name: synthetic_volumes}\nmodel: {backbone: cnn1d}\n")
    with pytest.raises(ConfigError, match="cnn1d"):
        load_experiment(tmp_path / "y.yaml")


def test_vicreg_learns_shapes_from_3d_crops(volumes):
    """Two 3-D crops as the positive pair, a small 3-D CNN: the probe rises above the raw voxels'
    (chance: the classes differ in shape alone) and the network at initialisation, no collapse."""
    before, after, losses = learn("vicreg", volumes, dict(projector=[128, 128]), 4, dict(name="cnn_volume", embed_dim=32, width=8, depth=3),
                                  VolumeViews(2))
    assert after["probe/linear_acc"] > raw_probe(volumes) + 0.15 and after["probe/linear_acc"] > before["probe/linear_acc"]
    assert after["label_free/rankme"] > 4 and losses[-1] < losses[0]


def test_mae_reconstructs_volumes_through_the_3d_masks(volumes):
    """MAE with the 3-D masks (random tubes through the depth) over a volume ViT of 4-voxel cubes,
    no new method file: the reconstruction error falls by far. Its probe does not rise above the
    raw voxels' here (about 0.35 against 0.34 after 3 epochs; I-JEPA's stays at 0.31): at 16^3 and
    this budget, reconstructing voxels is mostly reconstructing the bias field and the noise, and
    the mean token of so small a ViT stays of low rank (RankMe 1.3). VICReg's crops, above, are what
    learns shapes from these volumes at this size."""
    method = build_method("mae", build_backbone("vit_volume", (1, 16, 16, 16), 48, 0, 2, patch_size=4, heads=3), mask_ratio=0.75,
                          decoder_dim=32, decoder_depth=1, decoder_heads=2, norm_pix_loss=False)
    masks = method.masks()(5)
    assert {k: tuple(v.shape) for k, v in masks.items()} == {"visible": (5, 16), "masked": (5, 48)}  # 4 of 16 tubes of 4 cubes
    before, after, losses = learn("mae", volumes, dict(mask_ratio=0.75, decoder_dim=32, decoder_depth=1, decoder_heads=2, norm_pix_loss=False),
                                  3, dict(name="vit_volume", embed_dim=48, width=0, depth=2, heads=3, patch_size=4), VolumeViews(1))
    assert losses[-1] < 0.2 * losses[0]


def test_sinkhorn_codes_swapped_prediction_and_masked_slices_by_hand():
    """Equal scores: every code is 1/K and the swapped prediction is log K. Scores favouring one
    prototype per sample: each sample's codes sum to 1, each prototype takes B/K of the batch, and
    the code follows the score. The masked loss is the squared error on the masked slices alone."""
    assert torch.allclose(sinkhorn(torch.zeros(4, 2)), torch.full((4, 2), 0.5))
    assert float(swapped_prediction_loss(torch.zeros(4, 3), torch.zeros(4, 3))) == pytest.approx(np.log(3))
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    q = sinkhorn(scores, epsilon=0.5, iterations=50)
    assert torch.allclose(q.sum(1), torch.ones(4)) and torch.allclose(q.sum(0), torch.full((2,), 2.0), atol=1e-4)
    assert (q.argmax(1) == torch.tensor([0, 1, 0, 1])).all() and float(q[0, 0]) == pytest.approx(np.exp(2) / (1 + np.exp(2)), rel=1e-4)
    predicted, target = torch.zeros(1, 3, 2), torch.tensor([[[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]])
    assert float(masked_slice_loss(predicted, target, torch.tensor([[0, 2]]))) == pytest.approx((1 + 9) / 2)


def test_the_joint_image_volume_method_learns_shapes_from_slices_and_volumes(volumes):
    """SwAV between the two views' slices and between their volumes, masked slices predicted: the
    probe of the slice encoder and slice transformer rises above the raw voxels' and the network at
    initialisation, its embedding's rank above the initial one's (1: the slice transformer's final
    norm makes every volume alike at first), and the loss falls."""
    params = dict(prototypes=100, slice_prototypes=100, slice_projector=[128, 64], temperature=0.2)
    before, after, losses = learn("iicc", volumes, params, 5, dict(name="slice_cnn", embed_dim=32, width=8, depth=2, heads=4, slice_layers=1),
                                  VolumeViews(2, depth=False))
    assert after["probe/linear_acc"] > raw_probe(volumes) + 0.1 and after["probe/linear_acc"] > before["probe/linear_acc"]
    assert after["label_free/rankme"] > 2 * before["label_free/rankme"] and losses[-1] < 0.9 * losses[0]
