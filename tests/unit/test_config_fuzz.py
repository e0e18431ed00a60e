"""Bad configs, generated: hypothesis mutates the shipped digits experiment and sweep (wrong types,
unknown keys at any depth, out-of-range numbers, method/backbone/views/data that do not go
together, keys removed) and every result either loads or fails with one line that starts with the
file's name and names a key; never another exception, and before anything starts Ray.

The property is checked on the loaders the CLI runs first (``load_experiment``; for a sweep
``load_sweep``, its base experiment with the overrides, the search space against it); a sample
of the same mutations goes through the ``selfsup`` command itself for the exit status 2 and
the absence of a traceback."""

import atexit
import copy
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from selfsup.config import BACKBONES, METHOD_CONFIGS, VIEWS, ConfigError, load_experiment, load_space, load_sweep
from selfsup.tune.space import check_space, space_path
from selfsup.tune.sweep import base_config

REPO = Path(__file__).resolve().parents[2]
HOME = tempfile.mkdtemp(prefix="hyp")  # Hypothesis's caches, which it would put in the working directory
set_hypothesis_home_dir(HOME)
atexit.register(shutil.rmtree, HOME, ignore_errors=True)
EXPERIMENT = yaml.safe_load((REPO / "examples" / "digits_vicreg.yaml").read_text())
SWEEP = yaml.safe_load((REPO / "examples" / "digits_vicreg_sweep.yaml").read_text())
SETTINGS = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6), st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(min_size=1, max_size=4), st.integers(), max_size=2),
)
OUT_OF_RANGE = st.sampled_from([-1, 0, -1e-9, 10**12, math.nan, math.inf, -math.inf])
ENUMS = {
    "method.name": sorted(METHOD_CONFIGS) + ["simsiam"],
    "model.backbone": sorted({b for bs in BACKBONES.values() for b in bs}) + ["resnet9000"],
    "data.views": sorted({v for vs in VIEWS.values() for v in vs}) + ["auto", "sepia"],
    "data.name": ["digits", "mnist1d", "table", "ucr", "npz", "csv", "cifar10", "folder", "imagenet"],
    "optim.name": ["adamw", "lars", "sgd"],
    "train.precision": ["fp32", "bf16", "fp8"],
}


def paths(tree: dict, prefix: tuple = ()) -> list[tuple]:
    """Every key path of ``tree``, sections and leaves, at any depth."""
    out = []
    for key, value in tree.items():
        out.append((*prefix, key))
        if isinstance(value, dict):
            out += paths(value, (*prefix, key))
    return out


def mutation(tree: dict):
    keys = paths(tree)
    sections = [()] + [p for p in keys if isinstance(get(tree, p), dict)]
    leaves = [p for p in keys if not isinstance(get(tree, p), dict)]
    numbers = [p for p in leaves if isinstance(get(tree, p), (int, float)) and not isinstance(get(tree, p), bool)]
    return st.one_of(
        st.tuples(st.just("set"), st.sampled_from(keys), JUNK),
        st.tuples(st.just("unknown"), st.sampled_from(sections), st.text(min_size=1, max_size=8)),
        st.tuples(st.just("range"), st.sampled_from(numbers or leaves), OUT_OF_RANGE),
        st.tuples(st.just("enum"), st.sampled_from(sorted(ENUMS)).map(lambda k: tuple(k.split("."))), st.integers(0, 99)),
        st.tuples(st.just("delete"), st.sampled_from(keys), st.none()),
    )


def get(tree: dict, path: tuple):
    for key in path:
        tree = tree[key]
    return tree


def apply(tree: dict, change) -> None:
    kind, path, value = change
    if kind == "unknown":
        node = tree
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node[value] = 1
        return
    parent = tree
    for key in path[:-1]:
        parent = parent.setdefault(key, {}) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            return
    if kind == "delete":
        parent.pop(path[-1], None)
    elif kind == "enum":
        choices = ENUMS[".".join(path)]
        parent[path[-1]] = choices[value % len(choices)]
    else:
        parent[path[-1]] = value


def mutated(base: dict, draw) -> dict:
    tree = copy.deepcopy(base)
    for change in draw(st.lists(mutation(base), min_size=1, max_size=3)):
        apply(tree, change)
    return tree


def one_line(exc: ConfigError, file: Path) -> None:
    """One line: ``FILE: KEY: what is wrong`` (``FILE:LINE:`` for YAML syntax)."""
    msg = str(exc)
    assert "\n" not in msg and msg.startswith(f"{file}: ") and msg.split(": ", 2)[1], msg


@pytest.fixture(scope="module")
def ray_untouched():
    """Fails the module if any config check calls ``ray.init`` (Ray may already run for other tests)."""
    import ray

    calls, original = [], ray.init
    ray.init = lambda *a, **k: calls.append((a, k)) or original(*a, **k)
    try:
        yield
    finally:
        ray.init = original
    assert not calls, "a config check started Ray"


@SETTINGS
@given(data=st.data())
def test_generated_experiment_configs_load_or_fail_in_one_line(data, tmp_path_factory, ray_untouched):
    tree = mutated(EXPERIMENT, data.draw)
    file = tmp_path_factory.mktemp("exp") / "experiment.yaml"
    file.write_text(yaml.safe_dump(tree, allow_unicode=True))
    try:
        load_experiment(file)
        event("loads")
    except ConfigError as exc:
        event("refused")
        one_line(exc, file)


@SETTINGS
@given(data=st.data())
def test_generated_sweep_configs_load_or_fail_in_one_line(data, tmp_path_factory, ray_untouched):
    work = tmp_path_factory.mktemp("sweep")
    (work / "base.yaml").write_text(yaml.safe_dump(EXPERIMENT))
    base = {**SWEEP, "base": "base.yaml", "search_space": str(REPO / "search_spaces" / "vicreg.yaml")}
    base["overrides"] = {**base["overrides"], data.draw(st.sampled_from(["optim.lr", "model.width", "method.nope", "train"])): data.draw(JUNK)}
    tree = mutated(base, data.draw)
    file = work / "sweep.yaml"
    file.write_text(yaml.safe_dump(tree, allow_unicode=True))
    try:
        sweep = load_sweep(file)
        cfg = base_config(sweep, str(file))
        space_file = space_path(sweep.search_space, cfg.method.name)
        check_space(load_space(space_file), cfg.model_dump(mode="json"), str(space_file))
        event("loads")
    except ConfigError as exc:
        event("refused")
        msg = str(exc)
        files = (f"{file}: ", f"{(work / 'base.yaml').resolve()}: ", f"{REPO / 'search_spaces' / 'vicreg.yaml'}: ")
        assert "\n" not in msg and msg.startswith(files), msg


@pytest.mark.parametrize("change", [  # two real processes; the kinds of refusal are the in-process tests' above
    ("set", ("train", "epochs"), "ten"),
    ("enum", ("method", "name"), 6),  # ijepa on a CNN
])
def test_the_command_exits_2_with_one_line(change, tmp_path):
    tree = copy.deepcopy(EXPERIMENT)
    apply(tree, change)
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(tree))
    out = subprocess.run([sys.executable, "-m", "selfsup.cli", "train", str(file)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"selfsup: error: {file}: ") and "Traceback" not in out.stderr, out.stderr
