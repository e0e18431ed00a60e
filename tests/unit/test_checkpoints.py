"""Checkpoints: complete only with a matching manifest, read without unpickling code, and a
resume that skips damaged ones for the newest complete one."""

import json

import pytest
import torch

from selfsup.methods import METHODS
from selfsup.train import checkpoints
from selfsup.train.engine import Engine, build_optimizer
from tests.unit.test_method_updates import batch, make


def engine_state(name: str, opt: str = "adamw") -> dict:
    method = make(name)
    engine = Engine(method, method, build_optimizer(method, opt, lr=1e-2), total_steps=4)
    engine.train_step(batch(method))
    return engine.state_dict()


def save(run_dir, epoch: int, state: dict):
    folder = run_dir / checkpoints.folder_name(epoch)
    folder.mkdir(parents=True)
    checkpoints.write(folder, {"engine": state}, epoch)
    return folder


@pytest.mark.parametrize("name,opt", [(n, "adamw") for n in sorted(METHODS)] + [("vicreg", "lars")])
def test_every_methods_state_round_trips_with_weights_only(name, opt, tmp_path):
    state = engine_state(name, opt)
    folder = save(tmp_path, 3, state)
    back = checkpoints.read(str(folder))
    assert back["epoch"] == 3 and back["engine"]["step"] == state["step"]
    assert all(torch.equal(back["engine"]["method"][k], v) for k, v in state["method"].items())
    assert json.loads((folder / checkpoints.MANIFEST).read_text())["bytes"] == (folder / checkpoints.STATE).stat().st_size


def test_damaged_checkpoints_are_named_and_skipped_for_the_newest_complete_one(tmp_path):
    state = engine_state("vicreg")
    for epoch in (1, 2, 3, 4):
        save(tmp_path, epoch, state)
    truncated = tmp_path / "epoch-00004" / checkpoints.STATE
    truncated.write_bytes(truncated.read_bytes()[:1000])  # a kill mid-copy
    (tmp_path / "epoch-00003" / checkpoints.MANIFEST).unlink()  # the copy never reached the manifest
    with pytest.raises(checkpoints.CheckpointError, match="epoch-00004: state.pt does not match manifest.json"):
        checkpoints.read(str(tmp_path / "epoch-00004"))
    got, path, problems = checkpoints.newest_readable(str(tmp_path))
    assert got["epoch"] == 2 and path.endswith("epoch-00002")
    assert [p.split(": ")[0].rsplit("/", 1)[1] for p in problems] == ["epoch-00004", "epoch-00003"]
    assert "incomplete" in problems[1]
    assert checkpoints.newest_readable(str(tmp_path / "none")) == (None, None, [])


def test_a_state_that_would_run_code_is_refused(tmp_path):
    folder = tmp_path / "epoch-00001"
    folder.mkdir()
    checkpoints.write(folder, {"engine": {"evil": print}}, 1)  # pickles a callable
    with pytest.raises(checkpoints.CheckpointError, match="not a selfsup state"):
        checkpoints.read(str(folder))


def test_a_restart_writes_an_epoch_again_beside_its_old_folder_and_remakes_a_tracked_one_that_is_gone(tmp_path):
    """Resumed from epoch 1 past a damaged epoch 2 (its folder there) and an epoch 3 whose folder is
    gone but which Ray Train's controller still tracks (and will delete): epochs 2 and 3 are written
    to new folders, epoch 3's old one is there again (empty) for Train to delete, and a resume
    reads the newest writing of an epoch first."""
    state = engine_state("vicreg")
    for epoch in (1, 2):
        save(tmp_path, epoch, state)
    (tmp_path / "epoch-00002" / checkpoints.STATE).write_bytes(b"half")
    (tmp_path / "epoch-00002-1").mkdir()  # an earlier restart's writing of epoch 2, never completed
    name = checkpoints.restart_names(str(tmp_path), ["epoch-00001", "epoch-00002", "epoch-00003"])
    assert [name(e) for e in (2, 3, 4)] == ["epoch-00002-2", "epoch-00003-1", "epoch-00004"]
    assert (tmp_path / "epoch-00003").is_dir() and not any((tmp_path / "epoch-00003").iterdir())
    assert checkpoints.restart_names(str(tmp_path / "fresh"), [])(1) == "epoch-00001"

    (tmp_path / name(2)).mkdir()
    checkpoints.write(tmp_path / name(2), {"engine": state}, 2)
    got, path, problems = checkpoints.newest_readable(str(tmp_path))
    assert got["epoch"] == 2 and path.endswith("epoch-00002-2")
    assert [p.split(": ")[0].rsplit("/", 1)[1] for p in problems] == ["epoch-00003"]
