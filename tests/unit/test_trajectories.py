"""The trajectories modality (``selfsup.modalities.trajectories``) and its method: gymnasium pendulum
rollouts (balanced, repeatable, the torque within the pendulum's limits, hard for raw samples);
``.npz`` windows and LeRobot-style Parquet episodes; the step transformer (each step's observation
with the action that led to it, never the step's own); ACT-JEPA's loss by hand, its chunks and its
step; ACT-JEPA learning the gravity of the pendulum's world above the raw samples' probe."""

import numpy as np
import pandas as pd
import pytest
import torch

from selfsup.config import ConfigError, ExperimentConfig, load_experiment
from selfsup.data.splits import DataError
from selfsup.data.views import SignalViews, Unchanged
from selfsup.methods import build_method
from selfsup.methods.actjepa import actjepa_loss
from selfsup.modalities import load_dataset
from selfsup.modalities.trajectories import TrajectoryViews, controller_action, pendulum_rollouts, trajectory_npz, trajectory_parquet
from selfsup.models.backbones import build_backbone
from tests.unit.learning import learn, raw_probe


@pytest.fixture(scope="module")
def rollouts():
    return pendulum_rollouts(n=800)



def test_pendulum_rollouts_are_balanced_repeatable_and_hard_for_raw_samples(rollouts):
    assert rollouts.shape == (32, 4) and rollouts.groups == (3, 1) and len(rollouts.train.x) == 640
    assert torch.cat([rollouts.train.y, rollouts.test.y]).bincount().tolist() == [200] * 4
    assert torch.equal(pendulum_rollouts(n=8).train.x, pendulum_rollouts(n=8).train.x)
    x = rollouts.train.x
    assert torch.allclose(x[..., 0] ** 2 + x[..., 1] ** 2, torch.ones(()), atol=1e-4) and float(x[..., 3].abs().max()) <= 2.0
    assert raw_probe(rollouts) < 0.35  # 4 gravities: how the pendulum answers its torques, not any one value
    rng = np.random.default_rng(0)
    assert controller_action(1, np.array([1.0, 0.0, 2.0]), rng, 0.0).tolist() == pytest.approx([-1.6])  # damping: -0.8 x speed


def test_npz_windows_and_parquet_episodes(tmp_path):
    np.savez(tmp_path / "w.npz", observations=np.random.rand(10, 6, 3), actions=np.random.rand(10, 6, 2), y=np.arange(10) % 2)
    d = trajectory_npz(str(tmp_path / "w.npz"))
    assert d.shape == (6, 5) and d.groups == (3, 2) and len(d.train.x) == 8
    np.savez(tmp_path / "bad.npz", observations=np.random.rand(10, 6, 3), actions=np.random.rand(10, 5, 2))
    with pytest.raises(DataError, match=r"bad.npz: observations \(10, 6\) and actions \(10, 5\) differ in \(N, T\)"):
        load_dataset("trajectory_npz", str(tmp_path / "bad.npz"))
    rows = [{"episode_index": e, "frame_index": i, "observation.state": [e, i, 0.5], "action": [float(i)]} for e in range(5) for i in range(10)]
    (tmp_path / "eps").mkdir()
    pd.DataFrame(rows[:30]).to_parquet(tmp_path / "eps" / "a.parquet")
    pd.DataFrame(rows[30:][::-1]).to_parquet(tmp_path / "eps" / "b.parquet")  # steps in any order: sorted by frame_index
    p = trajectory_parquet(str(tmp_path / "eps"), horizon=4, stride=3, test_fraction=0.2)
    assert p.shape == (4, 4) and p.groups == (3, 1) and (len(p.train.x), len(p.test.x)) == (12, 3) and not p.has_labels
    assert p.test.x[0].tolist() == [[4, 0, 0.5, 0], [4, 1, 0.5, 1], [4, 2, 0.5, 2], [4, 3, 0.5, 3]]  # the last episode, in order
    pd.DataFrame({"episode_index": [0], "frame_index": [0]}).to_parquet(tmp_path / "c.parquet")
    with pytest.raises(DataError, match="c.parquet: not Parquet episodes with columns episode_index, frame_index, observation.state, action"):
        trajectory_parquet(str(tmp_path / "c.parquet"))


def test_the_step_transformer_sees_each_step_with_the_action_that_led_to_it():
    torch.manual_seed(0)
    net = build_backbone("trajectory_transformer", (6, 4), 16, 0, 1, heads=2, groups=(3, 1)).eval()
    x = torch.randn(2, 6, 4)
    changed = x.clone()
    changed[:, 5, 3] += 1.0  # the last step's own action: nothing sees it
    assert torch.allclose(net.tokens(x), net.tokens(changed))
    changed[:, 2, 3] += 1.0  # an earlier action: the next step's token sees it
    assert not torch.allclose(net.tokens(x), net.tokens(changed))
    assert net(x).shape == (2, 16) and net.tokens(x[:, :3]).shape == (2, 3, 16)
    with pytest.raises(ValueError, match=r"trajectory_transformer needs the \(observation, action\) widths of the data's 4 columns, got \(2, 1\)"):
        build_backbone("trajectory_transformer", (6, 4), 16, 0, 1, heads=2, groups=(2, 1))


def test_the_actjepa_loss_and_chunks_by_hand():
    """The L1 of the actions (|1| and |3| over 2: 2) and of the latents (|0.5| x 4 over 4: 0.5),
    weighted 1 and 2: 3. The method predicts the actions of the last context step and the chunk
    after it, and refuses a context and chunk longer than the windows."""
    loss, act, obs = actjepa_loss(torch.zeros(1, 2, 1), torch.tensor([[[1.0], [-3.0]]]), torch.zeros(1, 2, 2), torch.full((1, 2, 2), 0.5), 1.0, 2.0)
    assert (float(act), float(obs), float(loss)) == (2.0, 0.5, 3.0)
    backbone = build_backbone("trajectory_transformer", (6, 4), 16, 0, 1, heads=2, groups=(3, 1))
    method = build_method("actjepa", backbone, context_steps=2, chunk=3, predictor_dim=8, predictor_depth=1, predictor_heads=2)
    x = torch.randn(4, 6, 4)
    out = method({"views": [x]})
    assert set(out) == {"loss", "action_l1", "latent_l1"} and torch.isfinite(out["loss"])
    method.eval()
    view = method.view_embed(x)  # LiDAR's view of a window: the target encoder on 5 consecutive steps of it
    stretches = torch.stack([method.target(x[:, s:s + 5]) for s in range(2)])
    assert view.shape == (4, 16) and all(any(torch.allclose(view[i], stretches[s, i], atol=1e-5) for s in range(2)) for i in range(4))
    with pytest.raises(ValueError, match=r"method.context_steps 4 \+ method.chunk 3 exceed the windows' 6 steps \(data.horizon\)"):
        build_method("actjepa", backbone, context_steps=4, chunk=3, predictor_dim=8, predictor_depth=1, predictor_heads=2)


def test_trajectory_views_and_config(tmp_path):
    x = torch.randn(3, 8, 4)
    (v,) = TrajectoryViews(SignalViews((1.0, 1.0), (2.0, 2.0), 0.0, 0.0, 1))(x)
    assert torch.allclose(v, 2 * x, atol=1e-5)
    cfg = ExperimentConfig.model_validate({"name": "t", "data": {"name": "pendulum_rollouts", "horizon": 24}, "model": {"backbone": "trajectory_transformer"},
                                           "method": {"name": "actjepa"}})
    assert cfg.data.kind.name == "trajectories" and cfg.data.views == "auto"
    (tmp_path / "x.yaml").write_text("name: t\ndata: {name: trajectory_npz, path: w.npz, horizon: 16}\nmodel: {backbone: trajectory_transformer}\n")
    with pytest.raises(ConfigError, match="data.horizon cuts generated and Parquet episodes"):
        load_experiment(tmp_path / "x.yaml")


def test_actjepa_learns_the_worlds_gravity_from_predicting_actions_and_observations(rollouts):
    """Eight steps of history predict the next eight actions and, in the EMA encoder's latent space,
    the next eight observations: the probe of the target encoder reads the world's gravity above the
    raw samples (about 0.51 against 0.24, chance 0.25), its rank shows no collapse and both losses
    fall. Said plainly: at this budget (640 windows, 8 epochs) it rises only a little above the same
    network at initialisation (0.48), whose tokens of consecutive steps and torques already carry
    some of the dynamics; VICReg's jittered views do no better (0.46)."""
    params = dict(context_steps=8, chunk=8, predictor_dim=64, predictor_depth=2, predictor_heads=4)
    before, after, losses = learn("actjepa", rollouts, params, 8, dict(name="trajectory_transformer", embed_dim=64, width=0, depth=2, heads=4),
                                           Unchanged(1))
    assert after["probe/linear_acc"] > raw_probe(rollouts) + 0.15
    assert after["label_free/rankme"] > 4 and losses[-1] < 0.7 * losses[0]
