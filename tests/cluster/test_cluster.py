"""selfsup on a real cluster: three Ray nodes started with the `ray` CLI, sweeps submitted with
`ray job submit`, MLflow on `selfsup server` over PostgreSQL with artifacts proxied into an
S3-compatible bucket, checkpoints in that bucket, a worker killed, a node lost. Nothing mocked.

The tests share one cluster (see conftest.py); node loss comes last, as it takes a node away."""

import json
import subprocess
import time
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient
from ray.job_submission import JobStatus, JobSubmissionClient
from ray.util.state import list_jobs

from selfsup.tracking.runs import NODES, PREPROCESS_NODES, STARTS, TRIAL_NODE
from tests.cluster import services
from tests.cluster.conftest import ARTIFACTS, RUNS

REPO = Path(__file__).resolve().parents[2]
SELFSUP = str(services.BIN / "selfsup")


def experiment(path: Path, name: str, tracking: dict, storage: str, **sets) -> Path:
    """A small digits VICReg experiment YAML at ``path``."""
    tree = {
        "name": name,
        "data": {"views": "light"},
        "model": {"backbone": "cnn", "embed_dim": 32, "width": 8, "depth": 2},
        "method": {"name": "vicreg", "projector": [64, 64]},
        "optim": {"lr": 3e-3},
        "train": {"epochs": 2, "batch_size": 128, "storage_path": storage},
        "eval": {"subset_size": 128, "lidar_samples": 32, "lidar_views": 4, "probe_every": 0},
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.25},
        "tracking": tracking,
    }
    for key, value in sets.items():
        section, _, leaf = key.partition(".")
        tree[section][leaf] = value
    path.write_text(yaml.safe_dump(tree))
    return path


def sweep_dir(work: Path, name: str, server: str, trials: int, epochs: int, **sets) -> Path:
    """A working directory holding a sweep YAML, its base experiment (with ``sets``) and its search space."""
    work.mkdir(parents=True, exist_ok=True)
    experiment(work / "base.yaml", name, {"uri": server}, f"s3://{RUNS}/{name}", **sets)
    (work / "space.yaml").write_text((REPO / "search_spaces" / "vicreg.yaml").read_text())
    (work / "sweep.yaml").write_text(yaml.safe_dump({
        "name": name, "base": "base.yaml", "search_space": "space.yaml", "overrides": {"train.epochs": epochs},
        "num_samples": trials, "max_concurrent_trials": trials, "trial_cpus": 0.25, "scheduler": {"type": "none"},
    }))
    return work


def submit(nodes, work: Path, *args: str, wait: bool = True) -> subprocess.CompletedProcess | str:
    """``ray job submit --working-dir WORK -- selfsup ARGS``: the finished process, or the job id."""
    cmd = [str(services.BIN / "ray"), "job", "submit", "--address", nodes.dashboard, "--working-dir", str(work)]
    if not wait:
        job = JobSubmissionClient(nodes.dashboard).submit_job(entrypoint=" ".join([SELFSUP, *args]), runtime_env={"working_dir": str(work)})
        return job
    return subprocess.run([*cmd, "--", SELFSUP, *args], capture_output=True, text=True, timeout=900, env=nodes.env)


def epoch_rows(pg: str, run_ids: list[str]) -> dict[str, list[int]]:
    """Each run's logged ``epoch`` steps, as rows in PostgreSQL (duplicates kept)."""
    ids = ",".join(f"'{r}'" for r in run_ids)
    rows = services.pg_rows(pg, f"SELECT run_uuid, step FROM metrics WHERE key = 'epoch' AND run_uuid IN ({ids}) ORDER BY step")
    out: dict[str, list[int]] = {r: [] for r in run_ids}
    for run, step in rows:
        out[run].append(step)
    return out


def sweep_runs(server: str, name: str):
    client = MlflowClient(server)
    exp = client.get_experiment_by_name(name)
    found = client.search_runs([exp.experiment_id], max_results=100)
    parent = next(r for r in found if r.data.tags.get("selfsup.role") == "sweep")
    return client, parent, [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def test_bad_cluster_setups_are_refused_before_anything_starts(nodes, server, client_env, tmp_path):
    def refused(cfg: Path, *wrap: str) -> str:
        out = subprocess.run([*wrap, SELFSUP, "train", str(cfg)], capture_output=True, text=True, timeout=300, env=client_env, cwd=tmp_path)
        assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
        lines = [line for line in out.stderr.splitlines() if line.startswith("selfsup: error:")]
        assert len(lines) == 1, out.stderr
        return lines[0]

    storage = f"s3://{RUNS}/refused"
    sqlite = experiment(tmp_path / "sqlite.yaml", "bad-sqlite", {"uri": f"sqlite:///{tmp_path}/m.db"}, storage)
    line = refused(sqlite)
    assert "tracking.uri: sqlite:///" in line and "the Ray cluster has 3 nodes" in line
    assert not (tmp_path / "m.db").exists()

    folder = experiment(tmp_path / "folder.yaml", "bad-folder", {"uri": server, "artifact_location": str(tmp_path / "a")}, storage)
    line = refused(folder)
    assert "tracking.artifact_location:" in line and "mlflow-artifacts:/" in line

    # A checkpoint folder that the other nodes do not see: the driver runs in a mount namespace of
    # its own, where the folder is a private tmpfs (as a disk local to one machine would be).
    private = tmp_path / "private-runs"
    private.mkdir()
    local = experiment(tmp_path / "local.yaml", "bad-local", {"uri": server}, str(private))
    line = refused(local, "unshare", "--mount", "--propagation", "private", "sh", "-c", f'mount -t tmpfs tmpfs {private} && exec "$0" "$@"')
    assert f"train.storage_path: {private} is not visible from node" in line and "of 3 nodes)" in line
    # ... while a folder every node sees (one machine's disk) is accepted: the check is real.
    assert MlflowClient(server).get_experiment_by_name("bad-sqlite") is None
    assert MlflowClient(server).get_experiment_by_name("bad-folder") is None
    assert MlflowClient(server).get_experiment_by_name("bad-local") is None

    # A job whose checkpoints would live in its own temporary working directory.
    work = tmp_path / "job"
    work.mkdir()
    experiment(work / "rel.yaml", "bad-relative", {"uri": server}, "./selfsup-runs")
    out = submit(nodes, work, "train", "rel.yaml")
    assert out.returncode != 0 and "train.storage_path:" in out.stdout and "inside the job's working directory" in out.stdout


def test_nodes_sharing_a_session_folder_are_refused_for_a_working_dir_job(nodes, server, tmp_path):
    """A node started on the head's machine without a ``--temp-dir`` of its own joins the head's
    session folder; its Ray unpacks a job's ``--working-dir`` there anew, deleting the folder the
    job's driver runs in (a sweep then failed at its end, in Tune's final analysis). Such a job
    is refused in one line, before any run, naming the fix."""
    extra = len(nodes.nodes)
    services.start_node(nodes, extra, cpus=1, shared_temp=nodes.temp_dirs[0])
    try:
        services.wait_nodes(nodes, 4, "a fourth node")
        work = sweep_dir(tmp_path / "job", "shared-session", server, trials=2, epochs=1)
        out = submit(nodes, work, "sweep", "sweep.yaml")
        assert out.returncode != 0, out.stdout[-3000:]
        # `ray job submit` shows the job's output, then again in the failure's status message
        lines = {line for line in out.stdout.splitlines() if "in one session folder" in line}
        assert len(lines) == 1, out.stdout[-3000:]
        line = lines.pop()
        assert line.startswith("selfsup: error: sweep.yaml: Ray nodes ") and "ray start --temp-dir DIR" in line and nodes.temp_dirs[0] in line
        assert MlflowClient(server).get_experiment_by_name("shared-session") is None
    finally:
        services.kill_tree(nodes.nodes.pop(extra).pid)
        services.wait_nodes(nodes, 3, "the fourth node gone")


def test_the_readme_sweep_submitted_to_three_nodes(nodes, server, pg, s3, tmp_path):
    """The README's main sweep (ASHA; 2 of its 8 trials and 4 of its 8 epochs, for the suite's time), submitted as cluster/README.md says:
    ``ray job submit --working-dir . -- selfsup sweep examples/...`` from a copy of the repository's
    examples, logging to the tracking server, checkpoints in the bucket. (Such a sweep once failed at
    its end, in Tune's final analysis, when nodes shared a session folder: see the test above.)"""
    work = tmp_path / "job"
    name, trials, epochs = "mnist1d-vicreg-sweep", 2, 4
    sweep = services.readme_sweep(work, trials=trials, **{"tracking.uri": server, "train.storage_path": f"s3://{RUNS}/readme", "train.epochs": epochs})
    t0 = time.monotonic()
    out = subprocess.run([str(services.BIN / "ray"), "job", "submit", "--address", nodes.dashboard, "--working-dir", ".", "--", SELFSUP,
                          "sweep", str(sweep.relative_to(work))], cwd=work, capture_output=True, text=True, timeout=900, env=nodes.env)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    print(f"the README's sweep of {trials} trials on 3 nodes: {time.monotonic() - t0:.0f} s")
    assert "model registry: trial" in out.stdout and f"registered as {name!r}" in out.stdout

    client, parent, children = sweep_runs(server, name)
    assert parent.info.status == "FINISHED" and len(children) == trials
    # A trial ASHA stopped is labelled; the others trained every epoch.
    finished = [c for c in children if c.info.status == "FINISHED"]
    stopped = [c for c in children if c.info.status == "KILLED"]
    assert finished and len(finished) + len(stopped) == trials
    assert all(c.data.metrics["epoch"] == epochs for c in finished)
    assert all(c.data.tags.get("selfsup.stopped_by") in ("scheduler", "collapse") for c in stopped)
    # Every artifact goes through the server, and reads back through it.
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"selection.txt", "selection.csv", "selection_scatter.png"}
    for c in children:
        assert c.info.artifact_uri.startswith("mlflow-artifacts:/")
        assert name in Path(client.download_artifacts(c.info.run_id, "config.yaml", str(tmp_path))).read_text()
    for c in finished:  # the spectrum of a run's last epoch
        assert json.loads(Path(client.download_artifacts(c.info.run_id, "spectrum.json", str(tmp_path))).read_text())
    # PostgreSQL holds each epoch each trial trained exactly once.
    rows = epoch_rows(pg, [c.info.run_id for c in children])
    last = {c.info.run_id: int(c.data.metrics["epoch"]) for c in children}
    assert all(steps == list(range(1, last[run] + 1)) for run, steps in rows.items()), rows
    # Trials' workers landed on the nodes that are not the head.
    placed = {n for c in children for n in json.loads(c.data.tags["selfsup.nodes"])}
    assert placed - {nodes.node_id(0)}, placed
    # Checkpoints and artifacts are objects in the buckets.
    keys = services.s3_keys(s3[0], RUNS, "readme/")
    assert sum(k.endswith("/state.pt") for k in keys) >= trials
    assert any(k.endswith("selection.txt") for k in services.s3_keys(s3[0], ARTIFACTS))
    version = client.search_model_versions(f"name = '{name}'")[0]
    assert version.source.startswith("mlflow-artifacts:/") or version.source.startswith("models:/")


def test_bucket_shards_through_ray_data_in_a_sweep_and_an_elastic_run_that_loses_a_node(nodes, server, pg, s3, client_env, tmp_path):
    """Digits as WebDataset and as Parquet shards in the bucket (``selfsup shard``), read through Ray
    Data, whose tasks are pinned to an added node offering ``preprocess`` (a CPU-only node), by
    workers that each ask for a ``trainer`` unit, which two other added nodes offer. First a sweep (one
    trial) on the WebDataset shards; then an elastic run (1 to 2 workers) on the Parquet shards,
    one of whose trainer nodes is lost after epoch 2: it goes on with one worker from its checkpoint
    in the bucket and finishes, and exports from the bucket. Every epoch logged once, probes as with
    in-memory digits; none of the client's keys reaches a job's runtime env."""
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    np.savez(tmp_path / "digits.npz", x=(d.images[:, None] / 16).astype(np.float32), y=d.target)
    for fmt in ("parquet", "webdataset"):
        out = subprocess.run([SELFSUP, "shard", str(tmp_path / "digits.npz"), "--out", f"s3://{RUNS}/shards/{fmt}", "--format", fmt,
                              "--shard-size", "400"], capture_output=True, text=True, timeout=300, env=client_env)
        assert out.returncode == 0, out.stderr[-3000:]
        assert sum(k.endswith((".parquet", ".tar")) for k in services.s3_keys(s3[0], RUNS, f"shards/{fmt}/")) == 5
    shards = f"s3://{RUNS}/shards/parquet"
    pinned = {"data.name": "shards", "data.stream": True, "data.preprocess_resource": "preprocess", "data.preprocess_cpus": 0.5,
              "scaling.cpus_per_worker": 0.5, "scaling.resources": {"trainer": 1}}
    epochs = 3
    cfg = experiment(tmp_path / "elastic.yaml", "elastic", {"uri": server}, f"s3://{RUNS}/elastic", **{
        **pinned, "data.path": shards, "train.batch_size": 64, "train.epochs": epochs, "train.max_failures": 3, "eval.probe_every": epochs,
        "scaling.num_workers": 2, "scaling.min_workers": 1,
    })
    work = sweep_dir(tmp_path / "sweep", "shard-sweep", server, trials=1, epochs=2, **{**pinned, "data.path": f"s3://{RUNS}/shards/webdataset"})
    first = len(nodes.nodes)
    for i, resources in enumerate([{"trainer": 1}, {"trainer": 1}, {"preprocess": 4}]):
        services.start_node(nodes, first + i, cpus=1, resources=resources)
    try:
        services.wait_nodes(nodes, first + 3, "three added nodes")
        trainers, preprocess = [nodes.node_id(first), nodes.node_id(first + 1)], nodes.node_id(first + 2)
        client = MlflowClient(server)
        earlier = services.live_placement_groups(nodes)
        swept = subprocess.run([SELFSUP, "sweep", "sweep.yaml"], capture_output=True, text=True, timeout=900, cwd=work, env=client_env)
        assert swept.returncode == 0, swept.stdout[-4000:] + swept.stderr[-3000:]
        _, parent, trials = sweep_runs(server, "shard-sweep")
        print(f"sweep on WebDataset shards: preprocessing on {[json.loads(t.data.tags[PREPROCESS_NODES]) for t in trials]}, workers on "
              f"{[json.loads(t.data.tags[NODES]) for t in trials]}")
        assert parent.info.status == "FINISHED" and [t.info.status for t in trials] == ["FINISHED"]
        assert all(json.loads(t.data.tags[PREPROCESS_NODES]) == [preprocess] for t in trials), "preprocessing only on the preprocess node"
        assert all(set(json.loads(t.data.tags[NODES])) <= set(trainers) for t in trials), "workers only on trainer nodes"
        assert all(steps == [1, 2] for steps in epoch_rows(pg, [t.info.run_id for t in trials]).values())
        assert all(t.data.metrics["probe/linear_acc"] > 0.7 for t in trials)

        # The sweep's trial holds both trainer nodes until its placement group is removed: an elastic
        # run started before then would begin on one worker.
        services.wait_for(lambda: services.live_placement_groups(nodes) <= earlier, "the sweep's placement groups removed", timeout=120)
        proc = subprocess.Popen([SELFSUP, "train", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=client_env)

        def at_epoch_2():
            exp = client.get_experiment_by_name("elastic")
            found = client.search_runs([exp.experiment_id]) if exp else []
            return found[0] if found and found[0].data.metrics.get("epoch", 0) >= 2 else (proc.poll() is not None and "ended")

        before = services.wait_for(at_epoch_2, "epoch 2 of the elastic run", timeout=300)
        assert before != "ended", proc.stdout.read()[-4000:]
        assert sorted(json.loads(before.data.tags[NODES])) == sorted(trainers), "two workers, on the trainer nodes"
        nodes.lose(first + 1)
        log, _ = proc.communicate(timeout=600)
    finally:
        for i in reversed(range(first, len(nodes.nodes))):
            services.kill_tree(nodes.nodes.pop(i).pid)
        services.wait_nodes(nodes, first, "the added nodes gone")
    assert proc.returncode == 0, log[-4000:]
    (run,) = client.search_runs([client.get_experiment_by_name("elastic").experiment_id])
    starts = json.loads(run.data.tags[STARTS])
    perf = {k: [round(m.value, 1) for m in sorted(client.get_metric_history(run.info.run_id, f"perf/{k}"), key=lambda m: m.step)]
            for k in ("epoch_s", "data_wait_s")}
    print(f"elastic run: per epoch {perf}; preprocessing on {[n[:8] for n in json.loads(run.data.tags[PREPROCESS_NODES])]} (the preprocess node "
          f"{preprocess[:8]}), workers first on {[n[:8] for n in trainers]}, after the loss on "
          f"{[n[:8] for n in json.loads(run.data.tags[NODES])]}; starts {starts}")
    # It resumed from a checkpoint, not from scratch: epoch 2's or epoch 1's (the loss lands once MLflow
    # holds epoch 2, which the worker logs before it reports epoch 2's checkpoint)
    assert run.info.status == "FINISHED" and len(starts) == 2 and starts[1] >= 1, (starts, log[-4000:])
    assert json.loads(run.data.tags[NODES]) == trainers[:1], "one worker left, on the trainer node that stayed"
    assert json.loads(run.data.tags[PREPROCESS_NODES]) == [preprocess]
    assert epoch_rows(pg, [run.info.run_id])[run.info.run_id] == list(range(1, epochs + 1))
    assert run.data.metrics["probe/linear_acc"] > 0.8
    checkpoint = run.data.tags["selfsup.checkpoint"]
    assert checkpoint.startswith(f"s3://{RUNS}/elastic/") and checkpoint.endswith(f"epoch-{epochs:05d}")
    assert any(k.endswith(f"epoch-{epochs:05d}/state.pt") for k in services.s3_keys(s3[0], RUNS, "elastic/"))
    # The client's shell holds the bucket's keys (as do the nodes'): none reaches the runtime env of
    # the runs' jobs, which Ray's dashboard and Jobs API show to anyone who reaches them; the endpoint does.
    envs = [json.dumps(j.runtime_env or {}, default=str) for j in list_jobs(address=nodes.dashboard, detail=True) if j.type == "DRIVER"]
    assert any("AWS_ENDPOINT_URL" in e for e in envs), envs
    for secret in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "MLFLOW_TRACKING_PASSWORD"):
        assert not any(secret in e for e in envs), envs

    out = subprocess.run([SELFSUP, "export", run.info.run_id, "--out", str(tmp_path / "exported"), "--tracking-uri", server],
                         capture_output=True, text=True, timeout=300, env=client_env)
    assert out.returncode == 0, out.stderr[-2000:]
    import torch

    from selfsup.models.saved import load_backbone

    assert load_backbone(tmp_path / "exported")(torch.rand(2, 1, 8, 8)).shape == (2, 32)


def test_node_loss_mid_sweep(nodes, server, pg, tmp_path):
    """A node holding a trial's worker is lost mid-epoch (its raylet killed, then the rest of its
    processes, as when a machine disappears): a trial with a worker there resumes on the nodes left
    from its checkpoint (Train restarts the worker group), one with only its Tune function there is
    restarted by Tune or finishes untouched, a trial with nothing there is untouched; the sweep ends
    with every epoch of every trial in MLflow exactly once."""
    trials, epochs = 3, 12  # 3 x 0.5 CPU: more than the head node holds, so trials spread; the first still runs when the last is at epoch 3
    # Epochs of a few seconds (44 steps of 32 through a 32-wide CNN), so that the loss lands mid-run.
    work = sweep_dir(tmp_path / "job", "node-loss", server, trials, epochs, **{"model.width": 32, "train.batch_size": 32})
    jobs = JobSubmissionClient(nodes.dashboard)
    job = submit(nodes, work, "sweep", "sweep.yaml", wait=False)
    head = nodes.node_id(0)
    try:
        client = MlflowClient(server)

        def victim():
            """``(node, run, placed, workers)`` once every trial has logged 3 epochs (so its controller
            has taken in the report of epoch 1 at least, reports being taken in order): a non-head node
            holding a Train worker of trial ``run``, each trial's nodes (its Tune function's and
            workers') and its workers' nodes."""
            exp = client.get_experiment_by_name("node-loss")
            found = client.search_runs([exp.experiment_id], "tags.`selfsup.role` = 'trial'") if exp else []
            if len(found) < trials or any(r.data.metrics.get("epoch", 0) < 3 or NODES not in r.data.tags for r in found):
                return None
            placed = {r.info.run_id: {r.data.tags[TRIAL_NODE], *json.loads(r.data.tags[NODES])} for r in found}
            workers = {r.info.run_id: set(json.loads(r.data.tags[NODES])) for r in found}
            for run in found:
                away = [n for n in json.loads(run.data.tags[NODES]) if n != head]
                if away:
                    return away[0], run.info.run_id, placed, workers
            return None

        node_id, hit, placed, workers = services.wait_for(victim, "every trial at epoch 3, one with a worker off the head node", timeout=400)
        at_kill = client.get_run(hit).data.metrics["epoch"]
        nodes.lose(next(i for i in range(1, len(nodes.nodes)) if nodes.node_id(i) == node_id))
        status = services.wait_for(lambda: (s := jobs.get_job_status(job)).is_terminal() and s, "the sweep job", timeout=900)
        logs = jobs.get_job_logs(job)
    finally:
        if not jobs.get_job_status(job).is_terminal():
            jobs.stop_job(job)
    assert status == JobStatus.SUCCEEDED, logs[-5000:]

    client, parent, children = sweep_runs(server, "node-loss")
    story = "\n".join(f"{c.info.run_name}: placed {sorted(n[:8] for n in placed[c.info.run_id])}, "
                      f"starts {c.data.tags.get(STARTS)}, now on {c.data.tags[TRIAL_NODE][:8]} / {c.data.tags[NODES]}" for c in children)
    print(f"node {node_id[:8]} lost at epoch {at_kill:.0f} of trial run {hit[:8]}:\n{story}")
    context = f"{story}\n--- job log (tail) ---\n{logs[-6000:]}"
    assert parent.info.status == "FINISHED" and len(children) == trials, context
    assert all(c.info.status == "FINISHED" for c in children), context
    rows = epoch_rows(pg, [c.info.run_id for c in children])
    assert all(steps == list(range(1, epochs + 1)) for steps in rows.values()), f"{rows}\n{context}"
    for c in children:
        starts = json.loads(c.data.tags[STARTS])
        if node_id not in placed[c.info.run_id]:
            assert starts == [0], f"a trial with nothing on the lost node is untouched\n{context}"
            continue
        if node_id not in workers[c.info.run_id]:
            # Only its Tune function (and so its controller) was there. Tune restarts it while its
            # orphaned worker trains on until Ray reaps it, and it resumes from whatever checkpoint the
            # run's storage then lists, possibly none: slower but not wrong (every epoch reseeds, and
            # MLflow still holds each epoch once). In CI such a trial has also finished untouched, its
            # workers on a live node outrunning Tune's restart; either way it ended whole (above).
            assert starts == [0] or node_id not in {c.data.tags[TRIAL_NODE], *json.loads(c.data.tags[NODES])}, context
            continue
        # Its Train worker was there: it resumes from its last checkpoint on the nodes left when its
        # controller sees the worker die.
        assert len(starts) >= 2 and all(s >= 1 for s in starts[1:]), f"{c.info.run_name} did not resume from a checkpoint\n{context}"
        assert node_id not in json.loads(c.data.tags[NODES]), f"resumed on the nodes left\n{context}"
    first = json.loads(next(c for c in children if c.info.run_id == hit).data.tags[STARTS])[1]
    assert first <= at_kill + 1, f"the trial whose worker was lost resumes from the checkpoint it had\n{context}"
