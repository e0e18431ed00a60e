"""The sweep's live console, driven through Tune's callback hooks by stand-in trials: one line
per start, stop, prune, failure; a status line (not a terminal) or a table redrawn in place (a
terminal); the best trial and an ETA."""

import io
from types import SimpleNamespace

from selfsup.tune.progress import LiveProgress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def trial(tid, lr, error=None):
    return SimpleNamespace(trial_id=tid, config={"optim": {"lr": lr}}, last_result={}, get_error=lambda: error)


def play(console, interval=0.0):
    p = LiveProgress("label_free/lidar", "max", epochs=4, trials=3, interval=interval, console=console)
    a, b, c = trial("a_00000", 1e-3), trial("b_00001", 3e-3), trial("c_00002", 1e-2, error="Traceback ...\nValueError: boom")
    p.on_trial_start(0, [], a)
    p.on_trial_start(0, [], b)
    for epoch in (1, 2):
        p.on_trial_result(0, [], a, {"epoch": epoch, "label_free/lidar": 10.0 + epoch})
        p.on_trial_result(0, [], b, {"epoch": epoch, "label_free/lidar": 5.0 + epoch})
    p.on_step_begin(0, [])
    b.last_result = {"epoch": 2}
    p.on_trial_complete(0, [], b)
    p.on_trial_start(0, [], c)
    p.on_trial_error(0, [], c)
    for epoch in (3, 4):
        p.on_trial_result(0, [], a, {"epoch": epoch, "label_free/lidar": 10.0 + epoch})
    a.last_result = {"epoch": 4}
    p.on_trial_complete(0, [], a)
    p.on_experiment_end([])
    return console.getvalue()


def test_a_log_gets_one_line_per_event_and_status_lines():
    out = play(io.StringIO())
    lines = out.splitlines()
    assert "\x1b[" not in out
    assert lines[0].endswith("trial a_00000 started   optim.lr=0.001")
    assert any("trial b_00001 stopped by ASHA at epoch 2" in ln and "lidar 7" in ln for ln in lines)
    assert any("trial c_00002 FAILED (the other trials go on):" in ln for ln in lines)
    assert "ValueError: boom" in out, "the full error reaches the console"
    assert any("trial a_00000 finished at epoch 4" in ln and "lidar 14 (best so far)" in ln for ln in lines)
    assert lines[-1].endswith("3/3 trials ended · 0 running · best lidar 14 (a_00000)")
    assert any(ln.endswith("0/3 trials ended · 2 running · best lidar 12 (a_00000) · ETA ~0m00s") for ln in lines)


def test_a_terminal_gets_a_table_redrawn_in_place():
    out = play(Terminal())
    assert "\x1b[" in out and "  trial          state" in out
    assert "a_00000        running        2/4" in out
    assert out.rstrip().splitlines()[-1].endswith("3/3 trials ended · 0 running · best lidar 14 (a_00000)")


def test_train_progress_line_shows_the_bar_loss_metrics_and_eta():
    from selfsup.train.progress import epoch_line

    line = epoch_line(3, 10, {"train/loss": 1.23456, "label_free/rankme": 45.21, "label_free/lidar": 12.0, "perf/epoch_s": 2.0}, 2.0)
    assert line == "epoch  3/10 [######--------------] loss 1.235  rankme 45.21  lidar 12  2.0 s/epoch, ETA 14 s"


def test_a_pickled_progress_writes_to_the_console_of_the_process_that_restores_it(tmp_path):
    import pickle

    from selfsup.console import to_log

    restored = pickle.loads(pickle.dumps(LiveProgress("label_free/lidar", "max", 4, 3, console=io.StringIO())))
    assert restored.console is None
    with to_log(tmp_path / "log") as console:
        assert restored.out is console


def test_the_status_line_names_trials_waiting_for_resources_or_for_a_first_epoch(monkeypatch):
    """Tune's PENDING trials wait for the cluster's resources; a running trial without a first
    epoch for two minutes may be waiting for its workers' placement (bounded by
    scaling.placement_timeout_s): both are named, not hidden behind a growing ETA."""
    import selfsup.tune.progress as progress
    from selfsup.train.launch import placement_retries

    now = [1000.0]
    monkeypatch.setattr(progress.time, "time", lambda: now[0])
    p = LiveProgress("label_free/lidar", "max", epochs=4, trials=3, interval=0.0, console=io.StringIO())
    a, b = trial("a_00000", 1e-3), trial("b_00001", 3e-3)
    p.on_trial_start(0, [], a)
    p.on_trial_result(0, [], a, {"epoch": 1, "label_free/lidar": 9.0})
    p.on_trial_start(0, [], b)
    now[0] += 130
    p.on_step_begin(0, [SimpleNamespace(trial_id="a_00000", status="RUNNING"), SimpleNamespace(trial_id="b_00001", status="RUNNING"),
                        SimpleNamespace(trial_id="c_00002", status="PENDING")])
    assert p.status().startswith("0/3 trials ended · 2 running · 1 waiting for resources (c_00002) · no first epoch yet: b_00001 2m10s · "
                                 "best lidar 9 (a_00000) · ETA ~")
    assert (placement_retries(600), placement_retries(60), placement_retries(61)) == (9, 0, 1)
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "30")
    assert placement_retries(600) == 19
