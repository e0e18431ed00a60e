"""``selfsup``: command-line entry point. Parsing only; the work happens in the modules it calls."""

from __future__ import annotations

import argparse
import sys

from selfsup.errors import ConfigError, DataError

EXIT_USAGE = 2


def _train(args) -> int:
    from selfsup.config import load_experiment
    from selfsup.tracking.runs import COLLAPSED_METRIC
    from selfsup.train.launch import train

    cfg = load_experiment(args.config, args.set)
    metrics = train(cfg, args.config, verbose=args.verbose, from_run=args.from_run, allow_collapsed=args.allow_collapsed)
    return 1 if metrics.get(COLLAPSED_METRIC) else 0


def _sweep(args) -> int:
    from selfsup.config import load_sweep
    from selfsup.tune.sweep import run_sweep

    print(run_sweep(load_sweep(args.sweep, args.set), args.sweep, resume=args.resume, verbose=args.verbose))
    return 0


def _report(args) -> int:
    from pathlib import Path

    from selfsup.config import load_sweep
    from selfsup.report.publish import publish_latest

    if Path(args.sweep).is_file():
        from selfsup.tune.sweep import base_config

        sweep = load_sweep(args.sweep)
        base_cfg = base_config(sweep, args.sweep)
        uri, name, experiment = base_cfg.tracking.uri, sweep.name, base_cfg.tracking.experiment
    else:
        from selfsup.config import ExperimentConfig, resolve_paths

        uri = args.tracking_uri or resolve_paths(ExperimentConfig()).tracking.uri
        name, experiment = args.sweep, None
    try:
        print(publish_latest(uri, name, experiment))
    except LookupError as exc:
        raise ConfigError(f"{args.sweep}: {exc}") from None
    return 0


def _ui(args) -> int:
    from selfsup.config import ExperimentConfig, TrackingConfig, resolve_paths
    from selfsup.tracking.server import serve

    tracking = TrackingConfig(**{k: v for k, v in (("uri", args.tracking_uri), ("artifact_location", args.artifacts)) if v})
    t = resolve_paths(ExperimentConfig(tracking=tracking)).tracking
    serve(t.uri, t.artifact_location, args.host, args.port)
    return 0


def _server(args) -> int:
    from selfsup.tracking.server import serve_team

    return serve_team(args.backend_store_uri, args.artifacts, args.host, args.port, args.auth, args.allowed_hosts, args.workers)


def _methods(args) -> int:
    from selfsup.methods import METHODS

    for name in sorted(METHODS):
        print(f"{name:12s} {METHODS[name].description}")
    return 0


def _export(args) -> int:
    from selfsup.config import ExperimentConfig, resolve_paths
    from selfsup.train.export import export_run

    uri = args.tracking_uri or resolve_paths(ExperimentConfig()).tracking.uri
    try:
        out = export_run(uri, args.run, args.out, args.allow_collapsed)
    except (FileNotFoundError, LookupError) as exc:
        raise ConfigError(f"export: {exc}") from None
    print(f"wrote {out}/backbone.safetensors and backbone.json; load with selfsup.models.saved.load_backbone({str(out)!r})")
    return 0


def _datasets(args) -> int:
    from selfsup.modalities import MODALITIES

    width = max(len(name) for kind in MODALITIES.values() for name in kind.datasets)
    for kind in MODALITIES.values():
        print(f"{kind.plural} {kind.sample}:")
        for name, source in kind.datasets.items():
            print(f"  {name:{width}s} {source.describe}")
    return 0


def _shard(args) -> int:
    from selfsup.data.shards import write_shards

    written = write_shards(args.source, args.out, args.format, args.shard_size)
    print(f"wrote {len(written)} {args.format} shard(s) to {args.out}: {', '.join(p.rsplit('/', 1)[-1] for p in written[:3])}"
          f"{', ...' if len(written) > 3 else ''}")
    return 0


class Parser(argparse.ArgumentParser):
    """argparse with its errors in one line, naming the verb and the argument (no usage dump)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def whole(low: int, high: int, what: str):
    """An argparse type: a whole number in ``[low, high]``, else ``'TEXT' is not WHAT``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


port = whole(1, 65535, "a port number (1-65535)")
positive = whole(1, 2**31 - 1, "a positive whole number")


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="selfsup",
        description="Self-supervised pretraining on Ray with label-free hyperparameter search (LiDAR, RankMe, alpha-ReQ), tracked in MLflow.",
    )
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=Parser)

    t = sub.add_parser("train", help="one pretraining run", description="Run one pretraining run on Ray Train, logged to MLflow: on the Ray cluster at RAY_ADDRESS (or the one a "
        "`ray job submit` runs it on), else on a local Ray. On a multi-node cluster, tracking.uri must be an MLflow server and "
        "train.storage_path reachable from every node (see cluster/README.md).")
    t.add_argument("config", help="experiment YAML (see examples/)")
    t.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a config value (repeatable)")
    t.add_argument("--verbose", action="store_true", help="show Ray's and Train's own output here instead of only in the run's log")
    t.add_argument("--from", dest="from_run", metavar="RUN", help="continue the finished MLflow run RUN (its newest checkpoint: weights, optimizer, "
                   "EMA targets and the schedule's position, without warming up again) on this config's data, as its child run; needs "
                   "optim.schedule: infinite (set optim.anneal_epochs to anneal)")
    t.add_argument("--allow-collapsed", action="store_true", help="with --from: continue a run that collapsed or diverged, from its last "
                   "healthy checkpoint (refused without it)")
    t.set_defaults(fn=_train)

    s = sub.add_parser(
        "sweep",
        help="label-free hyperparameter search",
        description="Search hyperparameters with Ray Tune (OptunaSearch TPE + ASHA), every trial a Ray Train run, "
        "maximising a label-free metric (LiDAR by default); prints the selection report at the end and registers the pick. "
        "Runs on the Ray at RAY_ADDRESS (or under `ray job submit`), else on a local Ray.",
    )
    s.add_argument("sweep", help="sweep YAML (see examples/*_sweep.yaml)")
    s.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same name")
    s.add_argument("--verbose", action="store_true", help="show Ray's and Tune's own output here instead of only in the sweep's log")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a sweep YAML value (repeatable)")
    s.set_defaults(fn=_sweep)

    r = sub.add_parser(
        "report",
        help="selection report of a sweep",
        description="Print a finished sweep's selection report from MLflow (every trial; the pick of each label-free selector, "
        "its regret and rank correlation with probe accuracy; a warning when the default rule is weak) and log it, with its "
        "CSV, Markdown summary and plots, on the sweep's parent run.",
    )
    r.add_argument("sweep", help="sweep YAML, or a sweep name in the tracking store")
    r.add_argument("--tracking-uri", help="MLflow store when SWEEP is a name (default sqlite:///selfsup-mlflow.db)")
    r.set_defaults(fn=_report)

    e = sub.add_parser(
        "export",
        help="write a run's trained backbone (safetensors)",
        description="Write the encoder a run evaluates (its backbone, or a JEPA's EMA target encoder), rebuilt from the run's "
        "latest checkpoint (a run that collapsed: refused unless --allow-collapsed), to DIR as backbone.safetensors + backbone.json; selfsup.models.saved.load_backbone(DIR) loads it.",
    )
    e.add_argument("run", help="MLflow run id of a train run or sweep trial (printed by train; shown by report and the UI)")
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument("--tracking-uri", help="MLflow store (default sqlite:///selfsup-mlflow.db in the current directory)")
    e.add_argument("--allow-collapsed", action="store_true", help="export a run that collapsed or diverged, from its last healthy "
                   "checkpoint (refused without it)")
    e.set_defaults(fn=_export)

    u = sub.add_parser("ui", help="MLflow UI over the tracking store", description="Start `mlflow server` on 127.0.0.1 over the project's store.")
    u.add_argument("--tracking-uri", help="default sqlite:///selfsup-mlflow.db in the current directory")
    u.add_argument("--artifacts", help="default ./selfsup-artifacts")
    u.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; anything else is reachable by others: warned)")
    u.add_argument("--port", type=port, default=5000)
    u.set_defaults(fn=_ui)

    v = sub.add_parser(
        "server",
        help="the team's MLflow tracking server (PostgreSQL, proxied artifacts)",
        description="Start the MLflow tracking server every node of a cluster logs to: runs in a database "
        "(postgresql://...), artifacts proxied by the server (mlflow-artifacts:/) into a shared folder or an "
        "S3-compatible bucket (endpoint and keys from the AWS_* variables). Point tracking.uri at http://HOST:PORT.",
    )
    v.add_argument("--backend-store-uri", required=True, metavar="URI", help="postgresql://USER:PASSWORD@HOST:PORT/DB (sqlite:///FILE for one machine)")
    v.add_argument("--artifacts", required=True, metavar="DEST", help="where the server keeps artifacts: a folder or s3://BUCKET/PREFIX")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; anything else is reachable by others: warned)")
    v.add_argument("--port", type=port, default=5000)
    v.add_argument("--auth", action="store_true", help="MLflow basic auth; the admin is MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD")
    v.add_argument("--allowed-hosts", metavar="HOSTS", help="Host headers to accept besides localhost and private IPs (e.g. a DNS name: mlflow,mlflow.*)")
    v.add_argument("--workers", type=positive, default=4, help="server processes answering requests (default 4)")
    v.set_defaults(fn=_server)

    h = sub.add_parser(
        "shard",
        help="write an image or video folder or an .npz as WebDataset or Parquet shards, locally or to a bucket",
        description="Write SOURCE (an image or video folder, class subfolders or none, local or at a URI, or an .npz with x and "
        "optional y) as shards of --shard-size samples under --out (a folder, or s3://BUCKET/PREFIX and any pyarrow filesystem "
        "URI): WebDataset tar files (key.jpg|png|mp4|...|npy + key.cls) or Parquet (key, image|video|npy bytes, label). Images "
        "and videos keep their encoded bytes. Read them back with data.name: shards (images, arrays) or video_shards (videos).",
    )
    h.add_argument("source", help="an image or video folder or an .npz file")
    h.add_argument("--out", required=True, help="output folder or bucket prefix")
    h.add_argument("--format", choices=["webdataset", "parquet"], default="webdataset")
    h.add_argument("--shard-size", type=positive, default=1000, help="samples per shard (default 1000)")
    h.set_defaults(fn=_shard)

    sub.add_parser("methods", help="list methods").set_defaults(fn=_methods)
    sub.add_parser("datasets", help="list datasets by kind of data").set_defaults(fn=_datasets)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ConfigError, DataError) as exc:
        print("selfsup: error: " + str(exc).replace("\n", " "), file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        from selfsup.tracking.runs import TrackingUnreachable

        if not isinstance(exc, TrackingUnreachable):
            raise
        print(f"selfsup: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
