"""Search spaces: YAML of dotted config paths -> distributions, checked against the config and
turned into a nested Ray Tune ``param_space``."""

from __future__ import annotations

from pathlib import Path

from ray import tune

from selfsup.config import ConfigError, Distribution, apply_overrides, build_experiment

SPACES_DIR = Path(__file__).resolve().parents[1] / "search_spaces"
"""The search spaces shipped with the package (package data; ``search_spaces/`` at the top of a
checkout links here)."""


def space_path(explicit: str | None, method: str) -> Path:
    """The search space to use: the sweep's ``search_space``, else ``search_spaces/<method>.yaml``
    in the current directory, else the one shipped with the package."""
    if explicit:
        return Path(explicit)
    for root in (Path.cwd() / "search_spaces", SPACES_DIR):
        if (root / f"{method}.yaml").is_file():
            return root / f"{method}.yaml"
    raise ConfigError(f"search_space: no search_spaces/{method}.yaml in {Path.cwd()} or {SPACES_DIR}; set search_space in the sweep YAML")


def check_space(space: dict[str, Distribution], base_tree: dict, source: str) -> None:
    """Every key must be a config path and every end of every range a valid value for it."""
    for key, dist in space.items():
        for value in dist.examples():
            try:
                build_experiment(apply_overrides(base_tree, {key: value}, source), source)
            except ConfigError as exc:
                raise ConfigError(f"{source}: {key}: {value!r} is not a valid value here ({str(exc).split(': ', 1)[1]})") from None


def to_tune(space: dict[str, Distribution]) -> dict:
    """``{"optim.lr": loguniform}`` -> ``{"optim": {"lr": tune.loguniform(...)}}``."""
    out: dict = {}
    for key, d in space.items():
        if d.type == "loguniform":
            sampler = tune.loguniform(d.low, d.high)
        elif d.type == "uniform":
            sampler = tune.uniform(d.low, d.high)
        elif d.type == "int":
            sampler = tune.randint(int(d.low), int(d.high) + 1)
        else:
            sampler = tune.choice(d.values)
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = sampler
    return out
