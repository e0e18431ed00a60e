"""Each private Ray surface selfsup relies on (``selfsup.train.ray_private``), checked against the
installed Ray: when an upgrade moves or changes one, these fail naming it. And no other module of
selfsup reaches into Ray's private packages."""

import ast
import importlib
from pathlib import Path

import pytest

from selfsup.train import checkpoints, ray_private

PACKAGE = Path(ray_private.__file__).resolve().parents[1]


def private_api(module: str, name: str):
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"Ray's private API {module}.{name} is gone ({exc}): update selfsup/train/ray_private.py for this Ray")


def test_the_record_is_where_and_what_ray_train_writes(tmp_path):
    name = private_api("ray.train.v2._internal.constants", "CHECKPOINT_MANAGER_SNAPSHOT_FILENAME")
    assert ray_private.RECORD == name, f"Ray Train's checkpoint record is now {name!r}, not {ray_private.RECORD!r}"
    state = private_api("ray.train.v2._internal.execution.checkpoint.checkpoint_manager", "_CheckpointManagerState")
    result = private_api("ray.train.v2._internal.execution.checkpoint.checkpoint_manager", "_TrainingResultState")
    fields = set(state.model_fields)
    assert {"checkpoint_results", "latest_checkpoint_result"} <= fields, f"_CheckpointManagerState's fields are now {sorted(fields)}"
    made = {n: [] for n, f in state.model_fields.items() if f.is_required()}
    made.update(checkpoint_results=[result(checkpoint_dir_name="epoch-00001", metrics={}), result(checkpoint_dir_name="epoch-00002", metrics={})],
                latest_checkpoint_result=result(checkpoint_dir_name="epoch-00003", metrics={}), current_report_index=3)
    text = state(**made).model_dump_json()
    assert ray_private.record_folders(text) == ["epoch-00001", "epoch-00002", "epoch-00003"]

    for epoch in (1, 2):
        (tmp_path / checkpoints.folder_name(epoch)).mkdir()
    record = tmp_path / ray_private.RECORD
    assert ray_private.check_record(str(tmp_path)) is None  # no record: nothing to do
    record.write_text(state(**{**made, "latest_checkpoint_result": None}).model_dump_json())
    assert ray_private.check_record(str(tmp_path)) is None and record.exists()
    record.write_text(text)
    warning = ray_private.check_record(str(tmp_path))
    assert "it names epoch-00003, which is gone" in warning and not record.exists()
    record.write_text('{"checkpoint_res')
    assert "unreadable" in ray_private.check_record(str(tmp_path))
    record.write_text('{"pending": []}')
    assert "unreadable" in ray_private.check_record(str(tmp_path))
    assert len(list(tmp_path.glob(f"{ray_private.RECORD}.damaged-*"))) >= 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["epoch-00001", "epoch-00002"]


def test_the_trainer_drops_only_the_datasets_callback():
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    callback = private_api("ray.train.v2._internal.callbacks.datasets", "DatasetsCallback")
    assert hasattr(TorchTrainer, "_create_default_callbacks"), "Ray Train V2's TorchTrainer._create_default_callbacks is gone"
    made = dict(scaling_config=ScalingConfig(num_workers=1))
    theirs = TorchTrainer(lambda config: None, **made)._create_default_callbacks()
    ours = ray_private.Trainer(lambda config: None, **made)._create_default_callbacks()
    assert any(isinstance(c, callback) for c in theirs), "TorchTrainer no longer adds a DatasetsCallback by default"
    assert [type(c) for c in ours] == [type(c) for c in theirs if not isinstance(c, callback)]


def test_no_other_module_imports_rays_private_packages():
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "ray_private.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.relative_to(PACKAGE)}: {n}" for n in names if n.startswith("ray") and ("._internal" in n or "._private" in n)]
    assert not found, found
