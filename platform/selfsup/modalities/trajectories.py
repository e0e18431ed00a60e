"""Trajectories ``(T, O + A)``: windows of ``T`` steps of an agent's episode, each step its observation
(``O`` values) then the action it took (``A`` values): the whole modality in this file. ``SplitData.groups``
is ``(O, A)``, so the backbones and methods know which columns are which.

Datasets:

- ``pendulum_rollouts``: generated offline with gymnasium's ``Pendulum-v1`` (no download),
  deterministic by ``data.split_seed``: each episode starts at a random angle and speed, under one
  of three scripted controllers (energy-pumping swing-up, damping, random torques) with Gaussian
  action noise, in a world whose gravity is one of four (4, 7, 10 or 13 m/s^2, each +- 0.5); a window
  of ``data.horizon`` steps (32) from a random point of the episode is a sample (observation ``cos
  theta, sin theta, theta-dot``, action the torque: ``O = 3``, ``A = 1``), labelled by the gravity.
  The label is a property of the dynamics, not of any one observation or action: how the
  pendulum answers its torques tells it.
- ``trajectory_npz``: your episodes' windows in an ``.npz``: ``observations`` ``(N, T, O)`` and
  ``actions`` ``(N, T, A)``, optional ``y`` and the test split's ``observations_test``,
  ``actions_test``, ``y_test``.
- ``trajectory_parquet``: episodes in Parquet as LeRobot writes them (one row per step:
  ``episode_index``, ``frame_index``, ``observation.state`` and ``action`` as lists of floats; one
  file or a folder of them, local or at a URI), cut into windows of ``data.horizon`` steps every
  ``data.trajectory_stride`` (``horizon`` by default: no overlap); the last ``test_fraction`` of the
  episodes is the test split; unlabelled.

Views: the ``trajectory`` recipe is the signal recipe's jitter (``data.noise_std``) and amplitude
scaling (``data.amplitude_scale``) of every column; ``none`` (the JEPA's) passes windows as they are.

Backbone: ``trajectory_transformer``, the observations of every step through a linear embedding,
fixed 1-D sine-cosine positions over the steps and ``model.depth`` transformer blocks
(:class:`StepTransformer`: ``tokens(x)`` ``(B, T, E)``; its mean is the window's representation).
The actions do not enter it: they are what a policy predicts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from selfsup.data.files import Folder, open_binary
from selfsup.data.splits import DataError, Split, SplitData, check_labels, load_npz, numeric_samples, split_arrays, to_split
from selfsup.data.views import SignalViews, Unchanged
from selfsup.modalities.base import Dataset, Modality, register
from selfsup.models.backbones import backbone
from selfsup.models.tokens import sincos_pos_embed

GRAVITIES = (4.0, 7.0, 10.0, 13.0)
CONTROLLERS = ("swing-up", "damping", "random")


def controller_action(kind: int, obs: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """The torque ``(1,)`` of scripted controller ``kind`` (:data:`CONTROLLERS`) at observation
    ``cos theta, sin theta, theta-dot``, plus Gaussian noise, within the pendulum's +-2."""
    cos, sin, speed = obs
    if kind == 0:  # pump energy towards the upright's: push along the swing while below it
        energy = 0.5 * speed**2 + 10.0 * (cos - 1)
        u = -2.0 * np.sign(speed * energy) if abs(energy) > 0.5 else -(8.0 * np.arctan2(sin, cos) + 1.5 * speed)
    elif kind == 1:
        u = -0.8 * speed
    else:
        u = rng.uniform(-2, 2)
    return np.clip(np.array([u + rng.normal(0, noise)], dtype=np.float32), -2, 2)


def pendulum_rollouts(n: int = 1000, horizon: int = 32, test_fraction: float = 0.2, split_seed: int = 0) -> SplitData:
    """``n`` windows ``(horizon, 4)`` of pendulum episodes in four gravities, balanced (see the module
    docstring); the same ``split_seed`` gives the same windows."""
    import gymnasium

    rng = np.random.default_rng(split_seed)
    y = np.arange(n) % len(GRAVITIES)
    rng.shuffle(y)
    x = np.empty((n, horizon, 4), dtype=np.float32)
    for i, level in enumerate(y):
        env = gymnasium.make("Pendulum-v1", g=GRAVITIES[level] + rng.uniform(-0.5, 0.5)).unwrapped
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        kind, noise, start = rng.integers(len(CONTROLLERS)), rng.uniform(0.05, 0.5), rng.integers(0, 64)
        for step in range(start + horizon):
            action = controller_action(kind, obs, rng, noise)
            if step >= start:
                x[i, step - start] = np.concatenate([obs, action])
            obs, *_ = env.step(action)
        env.close()
    (xtr, ytr), (xte, yte) = split_arrays(x, y.astype(np.int64), test_fraction, split_seed)
    return SplitData("pendulum_rollouts", Split(torch.from_numpy(xtr), torch.from_numpy(ytr)), Split(torch.from_numpy(xte), torch.from_numpy(yte)),
                     groups=(3, 1))


def trajectory_npz(path: str, test_fraction: float = 0.2, split_seed: int = 0) -> SplitData:
    """Your windows from an ``.npz`` (``observations`` ``(N, T, O)``, ``actions`` ``(N, T, A)``, see the module docstring)."""
    p, arrays = load_npz(path)

    def windows(suffix: str) -> tuple[np.ndarray, tuple[int, int]]:
        parts = []
        for key, dims in ((f"observations{suffix}", "T,O"), (f"actions{suffix}", "T,A")):
            if key not in arrays:
                raise DataError(f"{p}: missing key {key!r} (found {', '.join(arrays) or 'nothing'})")
            parts.append(numeric_samples(arrays[key], f"{p}: {key}", dims))
        if parts[0].shape[:2] != parts[1].shape[:2]:
            raise DataError(f"{p}: observations{suffix} {parts[0].shape[:2]} and actions{suffix} {parts[1].shape[:2]} differ in (N, T)")
        return np.concatenate(parts, axis=2), (parts[0].shape[2], parts[1].shape[2])

    x, groups = windows("")
    y = check_labels(arrays.get("y"), len(x), f"{p}: y")
    if "observations_test" in arrays:
        xte, groups_test = windows("_test")
        if groups_test != groups or xte.shape[1] != x.shape[1]:
            raise DataError(f"{p}: the test windows {xte.shape[1:]} differ from the training windows {x.shape[1:]}")
        train, test = (x, y), (xte, check_labels(arrays.get("y_test"), len(xte), f"{p}: y_test"))
    else:
        train, test = split_arrays(x, y, test_fraction, split_seed)
    return SplitData(p.stem, to_split(*train), to_split(*test), groups=groups)


def trajectory_parquet(path: str, horizon: int = 32, stride: int | None = None, test_fraction: float = 0.2) -> SplitData:
    """LeRobot-style Parquet episodes cut into windows (see the module docstring)."""
    import pyarrow.parquet as pq

    root = Folder(path) if not str(path).endswith(".parquet") else None
    files = root.files({".parquet"}) if root is not None else [path]
    if not files:
        raise DataError(f"{path}: no .parquet files")
    columns = ("episode_index", "frame_index", "observation.state", "action")
    tables = []
    for f in files:
        try:
            with open_binary(f) as src:
                table = pq.read_table(src, columns=list(columns))
        except Exception as exc:  # pyarrow raises several types for missing columns and damaged files
            raise DataError(f"{f}: not Parquet episodes with columns {', '.join(columns)} ({type(exc).__name__}: {exc})") from None
        tables.append(table.to_pandas())
    import pandas as pd

    frame = pd.concat(tables).sort_values(["episode_index", "frame_index"])
    episodes = []
    for _, ep in frame.groupby("episode_index", sort=True):
        try:
            obs, act = np.stack(ep["observation.state"].to_numpy()), np.stack(ep["action"].to_numpy())
        except ValueError:
            raise DataError(f"{path}: episode {ep['episode_index'].iloc[0]}: observation.state or action lists of unequal length") from None
        episodes.append(np.concatenate([obs, act], axis=1).astype(np.float32))
    groups = (len(frame["observation.state"].iloc[0]), len(frame["action"].iloc[0]))
    step = stride or horizon
    cut = max(1, int(round(len(episodes) * (1 - test_fraction))))

    def windows(eps) -> np.ndarray:
        out = [e[s:s + horizon] for e in eps for s in range(0, len(e) - horizon + 1, step)]
        if not out:
            raise DataError(f"{path}: no episode has data.horizon {horizon} steps")
        return np.stack(out)

    train = windows(episodes[:cut])
    test = windows(episodes[cut:]) if cut < len(episodes) else train[:0]
    return SplitData(Path(str(path)).stem, Split(torch.from_numpy(train), None), Split(torch.from_numpy(test), None), groups=groups)


class TrajectoryViews:
    """``n_views`` views of a batch ``(B, T, O + A)``: :class:`SignalViews` over the steps (columns as channels)."""

    def __init__(self, signal: SignalViews):
        self.signal, self.n_views = signal, signal.n_views

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [v.transpose(1, 2) for v in self.signal(x.transpose(1, 2))]


class StepTransformer(nn.Module):
    """The ``trajectory_transformer`` backbone (see the module docstring): ``(B, T, O + A) -> (B, E)``
    for windows of ``steps`` steps of ``observation`` and ``actions`` values."""

    def __init__(self, steps: int, observation: int, actions: int, embed_dim: int, depth: int, heads: int):
        super().__init__()
        from timm.models.vision_transformer import Block

        self.embed_dim, self.observation, self.actions, self.steps = embed_dim, observation, actions, steps
        self.embed = nn.Linear(observation + actions, embed_dim)
        self.register_buffer("pos", sincos_pos_embed(embed_dim, (steps,))[None], persistent=False)
        self.blocks = nn.Sequential(*[Block(embed_dim, heads, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """One token per step ``(B, T', E)`` of the observations of ``x`` ``(B, T', O + A)``, ``T' <= T``
        (the first ``T'`` positions)."""
        t = x.shape[1]
        before = F.pad(x[:, :-1, self.observation:], (0, 0, 1, 0))  # the action that led to each step; none before the first
        return self.norm(self.blocks(self.embed(torch.cat([x[..., : self.observation], before], dim=-1)) + self.pos[:, :t]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(x).mean(dim=1)


@backbone("trajectory_transformer", "transformer over a trajectory's steps: each step's observation embedded, 1-D sine-cosine positions, blocks",
          transformer=True)
def _trajectory_transformer(in_shape, embed_dim, depth, heads, groups, **_):
    if not groups or len(groups) != 2 or sum(groups) != in_shape[1]:
        raise ValueError(f"trajectory_transformer needs the (observation, action) widths of the data's {in_shape[1]} columns, got {groups}")
    if embed_dim % 2:
        raise ValueError(f"model.embed_dim {embed_dim} must be even (the steps' sine-cosine positions)")
    return StepTransformer(in_shape[0], groups[0], groups[1], embed_dim, depth, heads)


@register
class Trajectories(Modality):
    name, plural, sample = "trajectories", "trajectories", "(T, O + A)"
    datasets = {
        "pendulum_rollouts": Dataset("1,000 generated windows of gymnasium Pendulum-v1 episodes under 3 noisy scripted controllers, "
                                     "in 4 gravities (the label); data.horizon steps of (cos, sin, speed, torque); data.samples sets the count",
                                     lambda a: pendulum_rollouts(a["samples"] or 1000, horizon=a["horizon"], test_fraction=a["test_fraction"],
                                                                split_seed=a["split_seed"]), path="none", generated=True),
        "trajectory_npz": Dataset("your windows: data.path -> .npz with observations (N, T, O) and actions (N, T, A), optional y and *_test",
                                  lambda a: trajectory_npz(a["path"], a["test_fraction"], a["split_seed"])),
        "trajectory_parquet": Dataset("your episodes: data.path -> LeRobot-style Parquet (episode_index, frame_index, observation.state, action), "
                                      "windows of data.horizon steps every data.trajectory_stride",
                                      lambda a: trajectory_parquet(a["path"], a["horizon"], a["trajectory_stride"], a["test_fraction"]),
                                      keys=("trajectory_stride",)),
    }
    recipes = {
        "trajectory": "trajectories: jitter and amplitude scaling of every observation and action",
        "none": "no augmentation: the samples as they are",
    }
    default_recipes = ("trajectory", "none")
    augmentation = "trajectory"
    backbones = ("trajectory_transformer",)
    fields = {
        "horizon": (int, Field(32, ge=2)),
        "trajectory_stride": (int | None, Field(None, ge=1)),
    }
    keys = ("horizon",)
    loads = ("horizon", "trajectory_stride")

    def check(self, data) -> None:
        if data.name == "trajectory_npz" and data.changed("horizon"):
            raise ValueError("data.horizon cuts generated and Parquet episodes, not data.name 'trajectory_npz' (its windows are as stored)")

    def views(self, recipe, data, cfg, n_views, local_crops, batched):
        if recipe == "none":
            return Unchanged(n_views)
        return TrajectoryViews(SignalViews((1.0, 1.0), cfg.amplitude_scale, cfg.noise_std, 0.0, n_views))

    def fake(self, cfg, root: Path) -> str:
        """Three Parquet episodes of ``data.horizon`` + 10 steps (4 observation values, 2 action values; random)."""
        import pandas as pd

        rng = np.random.default_rng(0)
        rows = [{"episode_index": e, "frame_index": i, "observation.state": rng.normal(size=4).tolist(), "action": rng.normal(size=2).tolist()}
                for e in range(3) for i in range(cfg.horizon + 10)]
        path = root / "episodes.parquet"
        pd.DataFrame(rows).to_parquet(path)
        return str(path)
