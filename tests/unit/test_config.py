import textwrap

import pytest

from selfsup.cli import main
from selfsup.config import ConfigError, load_experiment, load_space, load_sweep


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def error_of(fn, *args):
    with pytest.raises(ConfigError) as exc:
        fn(*args)
    return str(exc.value)


def test_defaults_and_overrides(tmp_path):
    p = write(tmp_path, "a.yaml", "method: {name: simclr}\n")
    cfg = load_experiment(p, ["optim.lr=3e-3", "train.epochs=4", "method.temperature=0.1"])
    assert (cfg.optim.lr, cfg.train.epochs, cfg.method.temperature) == (3e-3, 4, 0.1)


@pytest.mark.parametrize(
    "text, sets, expected",
    [
        ("optim: {lr: 1.0e-3, lrr: 2}\n", [], "optim.lrr: unknown key"),
        ("train: {epochs: ten}\n", [], "train.epochs: Input should be a valid integer"),
        ("optim: {lr: -1}\n", [], "optim.lr: Input should be greater than 0"),
        ("method: {name: vicreg, temperature: 0.1}\n", [], "method.temperature: unknown key"),
        ("method: {name: byol2}\n", [], "method: unknown method 'byol2'"),
        ("", ["train.batch_size=255", "scaling.num_workers=2"], "not divisible by scaling.num_workers 2"),
        ("", ["data.crop_scale=[0.9, 0.2]"], "crop_scale must satisfy"),
        ("", ["model.nope=1"], "model.nope: unknown key"),
        ("data: [1, 2]\n", [], "data: Input should be a valid dictionary"),
        ("data: {name: cifar10}\n", [], "data: data.name 'cifar10' needs data.path"),
        ("method: {name: simclr}\ndata: {views: dino}\n", [], "<top>: data.views 'dino' does not suit method 'simclr'"),
        ("method: {name: mae}\n", [], "method 'mae' needs a ViT"),
        ("method: {name: mae, mask_ratio: 1.0}\n", [], "method.mask_ratio: Input should be less than 1"),
        ("method: {name: ijepa, pred_scale: [0.3, 0.1]}\n", [], "pred_scale must satisfy"),
        ("method: {name: dino, base_momentum: 1.5}\n", [], "method.base_momentum: Input should be less than or equal to 1"),
        ("", ["data.local_scale=[0.5, 0.1]"], "local_scale must satisfy"),
        ("method: {name: tjepa}\n", [], "method 'tjepa' is for tables, not images; images take"),
        ("method: {name: tjepa}\ndata: {name: table, path: wine}\nmodel: {backbone: mlp}\n", [], "method 'tjepa' needs model.backbone ft_transformer"),
        ("method: {name: sjepa}\ndata: {name: table, path: wine}\nmodel: {backbone: mlp}\n", [], "method 'sjepa' is for signals, not tables"),
        ("method: {name: sjepa}\ndata: {name: mnist1d, views: signal}\nmodel: {backbone: cnn1d}\n", [], "method 'sjepa' needs model.backbone vit1d"),
        ("method: {name: vicreg}\ndata: {name: mnist1d, views: none}\nmodel: {backbone: cnn1d}\n", [], "data.views 'none' does not suit method 'vicreg'"),
        ("method: {name: tjepa}\ndata: {name: table, path: wine, views: scarf}\nmodel: {backbone: ft_transformer}\n", [], "data.views 'scarf' does not suit method 'tjepa'"),
        ("method: {name: sjepa, keep: [0.5, 1.0]}\n", [], "keep must satisfy 0 < low <= high < 1"),
        ("method: {name: seqjepa, crop_scale: [0.9, 0.2]}\n", [], "crop_scale must satisfy 0 < low <= high <= 1"),
        ("method: {name: tjepa, predictor_dim: 30, predictor_heads: 4}\n", [], "predictor_dim 30 must be divisible by 2 and by predictor_heads 4"),
        ("model: {backbone: vit1d, embed_dim: 30, heads: 4}\n", [], "model.embed_dim 30 must be divisible by model.heads 4"),
        ("data: {signal_length: 100}\n", [], "data.signal_length applies to data.name 'wfdb' only, not 'digits'"),
        ("data: {name: mnist1d, stream: true}\nmodel: {backbone: cnn1d}\n", [], "data.stream applies to datasets read file by file (folder, shards, point_folder, wfdb, video_folder, video_shards, nifti), not 'mnist1d'"),
        ("data: {samples: 5000}\n", [], "data.samples sets how many samples a generated dataset makes (synthetic_scenes, synthetic_activities, pendulum_rollouts, synthetic_volumes), not 'digits'"),
        ("data: {name: synthetic_volumes, samples: 3}\nmodel: {backbone: cnn3d}\n", [], "data.samples: Input should be greater than or equal to 20"),
        ("data: {preprocess_cpus: 2}\n", [], "data.preprocess_cpus applies to data.ingest: ray_data (this data is read by the loader: data.ingest: auto, and"),
        ("data: {ingest: ray_data, loader_workers: 2}\n", [], "data.loader_workers applies to data.ingest: loader"),
        ("scaling: {num_workers: 2, min_workers: 3}\n", [], "scaling.min_workers 3 exceeds scaling.num_workers 2"),
        ("scaling: {num_workers: 4, min_workers: 2}\ntrain: {batch_size: 128}\n", [], "train.batch_size 128 is not divisible by 3 workers, which the elastic run"),
        ("scaling: {resources: {CPU: 2}}\n", [], "scaling.resources: CPU is set by cpus_per_worker"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path, text, sets, expected):
    p = write(tmp_path, "bad.yaml", text)
    msg = error_of(load_experiment, p, sets)
    assert msg.startswith(f"{p}: ")
    assert expected in msg
    assert "\n" not in msg


def test_yaml_syntax_error_names_line(tmp_path):
    p = write(tmp_path, "broken.yaml", "optim:\n  lr: [1, 2\n")
    assert error_of(load_experiment, p, []).startswith(f"{p}: line")


def test_missing_file():
    assert "file not found" in error_of(load_experiment, "/nonexistent/x.yaml", [])


def test_bad_set_syntax(tmp_path):
    p = write(tmp_path, "a.yaml", "")
    assert "expected key.path=value" in error_of(load_experiment, p, ["optim.lr"])


def test_search_space_errors(tmp_path):
    p = write(tmp_path, "s.yaml", "optim.lr: {type: loguniform, low: 0, high: 1}\n")
    assert "optim.lr" in error_of(load_space, p) and "low > 0" in error_of(load_space, p)
    p = write(tmp_path, "s2.yaml", "optim.lr: {type: gaussian, low: 0, high: 1}\n")
    assert "optim.lr.type" in error_of(load_space, p)
    p = write(tmp_path, "s3.yaml", "method.pred_scale: {type: choice, values: [[0.1, 0.2]]}\n")
    assert "choice values must be numbers" in error_of(load_space, p)


def test_sweep_paths_resolve_relative_to_file(tmp_path):
    write(tmp_path, "base.yaml", "")
    p = write(tmp_path, "sweep.yaml", "name: s\nbase: base.yaml\nnum_samples: 3\n")
    sweep = load_sweep(p)
    assert sweep.base == str(tmp_path / "base.yaml") and sweep.num_samples == 3


def test_sweep_sampler_and_registry(tmp_path):
    write(tmp_path, "base.yaml", "")
    p = write(tmp_path, "sweep.yaml", "name: s\nbase: base.yaml\n")
    sweep = load_sweep(p)
    assert sweep.sampler == "tpe" and sweep.registry is True
    sweep = load_sweep(p, ["sampler=random", "registry=false"])
    assert sweep.sampler == "random" and sweep.registry is False
    assert "sampler: Input should be 'tpe' or 'random' (got 'grid')" in error_of(load_sweep, p, ["sampler=grid"])


def test_asha_grace_period_defaults_to_half_the_epochs(tmp_path):
    from selfsup.tune.sweep import grace_period

    write(tmp_path, "base.yaml", "")
    p = write(tmp_path, "sweep.yaml", "name: s\nbase: base.yaml\n")
    assert load_sweep(p).scheduler.grace_period is None
    assert grace_period(load_sweep(p), 8) == 4 and grace_period(load_sweep(p), 1) == 1
    assert grace_period(load_sweep(p, ["scheduler.grace_period=2"]), 8) == 2
    assert grace_period(load_sweep(p, ["scheduler.grace_period=20"]), 8) == 8


def test_cli_exits_2_with_one_line(tmp_path, capsys):
    p = write(tmp_path, "bad.yaml", "optim: {lr: 1.0e-3, lrr: 2}\n")
    assert main(["train", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"selfsup: error: {p}: optim.lrr: unknown key"


def test_cli_bad_sweep_fails_before_ray(tmp_path, capsys):
    write(tmp_path, "base.yaml", "")
    write(tmp_path, "space.yaml", "optim.lrx: {type: uniform, low: 0.1, high: 0.2}\n")
    p = write(tmp_path, "sweep.yaml", "name: s\nbase: base.yaml\nsearch_space: space.yaml\n")
    assert main(["sweep", str(p)]) == 2
    err = capsys.readouterr().err
    assert "space.yaml: optim.lrx" in err and "unknown key" in err
    assert not (tmp_path / "selfsup-runs").exists()


def test_cli_bad_data_file(tmp_path, capsys):
    p = write(tmp_path, "a.yaml", f"data: {{name: npz, path: {tmp_path / 'missing.npz'}}}\n")
    assert main(["train", str(p)]) == 2
    assert "missing.npz: file not found" in capsys.readouterr().err


def test_ingest_auto_takes_ray_data_for_streamed_uris_and_shards(tmp_path):
    def data(**keys):
        return load_experiment(write(tmp_path, "d.yaml", "{}\n"), [f"data.{k}={v}" for k, v in keys.items()]).data

    assert not data().uses_ray_data and not data(name="folder", path="/x", stream="true").uses_ray_data
    assert data(name="folder", path="s3://b/images", stream="true").uses_ray_data
    assert data(name="shards", path="/x", stream="true").uses_ray_data and not data(name="shards", path="/x").uses_ray_data
    assert data(ingest="ray_data").uses_ray_data and not data(name="shards", path="/x", stream="true", ingest="loader").uses_ray_data


def test_resolve_paths_keeps_bundled_set_names(tmp_path):
    from selfsup.config import resolve_paths

    p = write(tmp_path, "a.yaml", "data: {name: table, path: wine}\nmodel: {backbone: mlp}\n")
    assert resolve_paths(load_experiment(p), tmp_path).data.path == "wine"
    q = write(tmp_path, "b.yaml", "data: {name: signal_npz, path: s.npz}\nmodel: {backbone: cnn1d}\n")
    assert resolve_paths(load_experiment(q), tmp_path).data.path == str(tmp_path / "s.npz")


def test_collapse_pruning_search_tells_optuna_pruned():
    import optuna
    from ray import tune

    from selfsup.tune.sweep import CollapsePruningSearch

    search = CollapsePruningSearch(space={"lr": tune.loguniform(1e-4, 1e-2)}, metric="label_free/rankme", mode="max",
                                   sampler=optuna.samplers.TPESampler(seed=0))
    for trial_id in ("a", "b"):
        assert "lr" in search.suggest(trial_id)
    search.on_trial_complete("a", {"label_free/rankme": 1.2, "collapsed": 1.0})
    search.on_trial_complete("b", {"label_free/rankme": 30.0, "collapsed": 0.0})
    states = [t.state for t in search._ot_study.trials]
    assert states == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE]
    assert search._ot_study.trials[1].value == 30.0
