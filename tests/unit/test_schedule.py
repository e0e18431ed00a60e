"""The infinite learning-rate schedule (Ibrahim et al. 2024; Singh et al. 2025, eq. 1) on
hand-computed values, and through the engine: a run continued from a checkpoint never warms up
again, and an anneal started at any checkpoint ends at the configured final rate."""

import math

import pytest
import torch
from torch import nn

from selfsup.config import ExperimentConfig
from selfsup.train.engine import Engine, build_optimizer, infinite_lr_factor
from selfsup.train.worker import set_schedule


def test_phases_on_hand_computed_values():
    f = lambda step, **kw: infinite_lr_factor(step, warmup_steps=4, cooldown_steps=10, constant_ratio=0.2, **kw)  # noqa: E731
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # linear warmup
    assert f(4) == pytest.approx(1.0)  # cooldown starts at the peak
    assert f(9) == pytest.approx(0.2 + 0.8 * 0.5)  # halfway: cos(pi/2) = 0
    assert f(13) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 0.9)))
    assert f(14) == f(1000) == pytest.approx(0.2)  # constant for as long as training goes
    # exponential anneal over 4 steps from step 20: 0.2 (0.01 / 0.2) ** (k / 4), k = 1..4
    anneal = [f(s, anneal_start=20, anneal_steps=4, min_ratio=0.01) for s in range(19, 26)]
    assert anneal == pytest.approx([0.2, *(0.2 * 0.05 ** (k / 4) for k in (1, 2, 3, 4)), 0.01, 0.01])
    # an anneal that starts during the cooldown decays from the rate it starts at
    assert f(6, anneal_start=6, anneal_steps=1, min_ratio=0.01) == pytest.approx(0.01)
    assert f(6, anneal_start=6, anneal_steps=2, min_ratio=0.01) == pytest.approx(math.sqrt(f(6) * 0.01))


class Tiny(nn.Linear):
    """A one-layer "method": enough for the engine to step and checkpoint."""

    def forward(self, batch):
        return {"loss": super().forward(batch["x"]).pow(2).mean()}

    def after_step(self, progress):
        pass


def engine_for(cfg: ExperimentConfig, steps_per_epoch: int, state: dict | None = None, start_epoch: int = 0) -> Engine:
    """An engine as the worker sets one up: fresh, from a checkpoint ``state`` of the run it
    continues (``start_epoch`` 0), or from its own checkpoint of ``start_epoch``."""
    torch.manual_seed(0)
    model = Tiny(3, 1)
    engine = Engine(model, model, build_optimizer(model, lr=cfg.optim.lr), total_steps=1)
    if state is not None:
        engine.load_state_dict(state)
    set_schedule(engine, cfg, steps_per_epoch, first_step=engine.step_count - start_epoch * steps_per_epoch)
    return engine


def lrs(engine: Engine, steps: int) -> list[float]:
    return [engine.train_step({"x": torch.ones(2, 3)})["lr"] for _ in range(steps)]


def config(**optim) -> ExperimentConfig:
    return ExperimentConfig.model_validate({"optim": {"lr": 0.1, "schedule": "infinite", "warmup_epochs": 1, "cooldown_epochs": 2,
                                                      "constant_lr_ratio": 0.3, "min_lr_ratio": 0.01, **optim}, "train": {"epochs": 5}})


@pytest.mark.parametrize("checkpoint_epoch", [2, 3, 5])  # mid-cooldown, its last step, the constant phase
def test_continued_run_never_rewarms_and_an_anneal_from_any_checkpoint_ends_at_the_final_rate(checkpoint_epoch):
    steps_per_epoch, at = 4, checkpoint_epoch * 4
    first = engine_for(config(), steps_per_epoch)
    rates = lrs(first, at)
    assert max(rates) == pytest.approx(0.1)  # warmed up once, to the peak
    state = first.state_dict()
    assert state["step"] == at
    schedule = [0.1 * infinite_lr_factor(step, 4, 8, 0.3) for step in range(at, at + 8)]

    # continued on: where the first run's schedule was, never above its last rate (no warmup again)
    more = lrs(engine_for(config(), steps_per_epoch, state), 8)
    assert more == pytest.approx(schedule) and max(more) <= rates[-1]
    # annealed over the whole continuation (two epochs): down from where it was, ending exactly at min_lr_ratio * lr
    cfg = config(anneal_epochs=2)
    cfg.train.epochs = 2
    annealed = lrs(engine_for(cfg, steps_per_epoch, state), 8)
    assert all(b < a for a, b in zip([schedule[0], *annealed], annealed))
    assert annealed[0] == pytest.approx(schedule[0] * (0.001 / schedule[0]) ** (1 / 8))
    assert annealed[-1] == pytest.approx(0.001)


def test_a_restarted_continuation_keeps_its_schedule():
    """A continued run that restarts from its own checkpoint of epoch 1 keeps the anneal where it was."""
    steps_per_epoch = 4
    cfg = config(anneal_epochs=2)
    cfg.train.epochs = 2
    source = engine_for(config(), steps_per_epoch)
    lrs(source, 12)
    whole = engine_for(cfg, steps_per_epoch, source.state_dict())
    rates = lrs(whole, 4)
    restarted = engine_for(cfg, steps_per_epoch, whole.state_dict(), start_epoch=1)
    assert rates + lrs(restarted, 4) == pytest.approx(lrs(engine_for(cfg, steps_per_epoch, source.state_dict()), 8))


def test_schedule_keys_are_checked():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="phases of schedule: infinite"):
        ExperimentConfig.model_validate({"optim": {"anneal_epochs": 1}})
    with pytest.raises(ValidationError, match="0 < min_lr_ratio <= constant_lr_ratio"):
        ExperimentConfig.model_validate({"optim": {"schedule": "infinite", "anneal_epochs": 1, "min_lr_ratio": 0.0}})
