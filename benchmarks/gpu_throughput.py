"""Step throughput of every method at its paper configuration, on one device: the pure-PyTorch engine
(no Ray, no MLflow: it runs on a bare GPU image with torch, timm and PyYAML, plus pydantic, which the method files
import for their config sections: ``benchmarks/device_wheels.sh`` fetches its wheels to carry there).

Each method's configuration is its ``examples/cluster/`` YAML (method section, model, input size, optimizer;
the batch per device is the YAML's global batch over its workers), with ViT-B/16 at 224 for every ViT method
(the YAMLs of DINO and MoCo v3 pretrain a ViT-S) and ResNet-50 for the CNN methods. The same step runs three
ways in one process:

- ``eager fp32``: no autocast, no compile (the baseline);
- ``eager bf16``: bf16 autocast;
- ``engine``: what a CUDA worker runs by default: bf16, ``torch.compile`` of the step, fused AdamW,
  channels-last convolutions (``train.compile/channels_last: auto``).

For each: samples/s (images, clips, volumes, ECGs, table rows, point clouds, sensor windows, trajectory windows) over timed steps after warm-up (compilation included in
warm-up), TFLOP/s from torch's FLOP counter (forward + backward of one step), that as a share of the bf16
matmul peak measured on the same device in the same run, and peak memory. Views and masks are made once before
timing (their CPU cost is the data loader's, not the step's). The table is printed last, then the issue's
targets. One call must finish in under 8 minutes on one GPU: ``--budget-s`` (default 420) skips what is left.

    python benchmarks/gpu_throughput.py                 # paper configurations, on a GPU
    python benchmarks/gpu_throughput.py --methods ijepa mae --steps 20
    python benchmarks/gpu_throughput.py --smoke         # tiny sizes on the CPU: every path once (in the suite)
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from pathlib import Path

import torch
import yaml
from torch._dynamo.utils import counters
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))

from selfsup.methods import METHODS, build_method  # noqa: E402
from selfsup.models.backbones import build_backbone  # noqa: E402
from selfsup.models.saved import backbone_kwargs  # noqa: E402
from selfsup.train.engine import Engine, build_optimizer, has_conv2d, to_channels_last  # noqa: E402

CONFIGS = {
    "simclr": "simclr_imagenet.yaml", "byol": "byol_imagenet.yaml", "vicreg": "vicreg_imagenet.yaml",
    "barlowtwins": "barlowtwins_imagenet.yaml", "mocov3": "mocov3_imagenet.yaml", "dino": "dino_imagenet.yaml",
    "ijepa": "ijepa_imagenet.yaml", "mae": "mae_imagenet.yaml", "sjepa": "sjepa_ecg.yaml", "tjepa": "tjepa_higgs.yaml",
    "timedrl": "timedrl_ecg.yaml", "twotower": "twotower_covertype.yaml", "sarjepa": "sarjepa_sar.yaml",
    "seqjepa": "seqjepa_imagenet.yaml", "cvrl": "cvrl_kinetics.yaml", "vcop": "vcop_ucf101.yaml", "iicc": "iicc_ct.yaml",
    "adljepa": "adljepa_kitti.yaml", "collossl": "collossl_realworld.yaml",
    "depict": "depict_mnist.yaml", "sie": "sie_3diebench.yaml", "dinov3": "dinov3_imagenet.yaml",
    "scatsimclr": "scatsimclr_stl10.yaml", "interclr": "interclr_imagenet.yaml",
    "gsimclr": "gsimclr_cifar10.yaml", "gedi": "gedi_cifar10.yaml", "actjepa": "actjepa_aloha.yaml",
}
BANKS = {"interclr": 1_281_167}
"""Methods with a memory bank of every training sample (InterCLR's), and its size in the paper
configuration (ImageNet's training set): prepared as a streamed dataset of that size is (random
unit features), the batches carry sample indices into it."""
CATEGORIES = {"wilderness_area": 4, "soil_type": 40}
"""One-hot widths of the cluster configs' categorical columns (Covertype's), whose data is not here."""
VIT_B = "vit_base_patch16_224"
MODES = ("engine", "eager bf16", "eager fp32")  # run in this order: what matters first if the budget runs out
TARGET_IJEPA = 3200.0  # img/s, I-JEPA ViT-B/16 bf16 batch 128 on one H200 (3x the reference implementation)
TARGET_PEAK = 0.40  # share of the bf16 matmul peak for every ViT-B method

# --smoke: the same paths at tiny sizes (CPU seconds, not hours)
SMOKE_METHOD = {
    "simclr": dict(projector=[32, 16]), "byol": dict(projector=[32, 16], predictor=[32, 16]),
    "vicreg": dict(projector=[32, 32, 32]), "barlowtwins": dict(projector=[32, 32, 32]),
    "mocov3": dict(projector=[32, 32, 16], predictor=[32, 16]), "dino": dict(hidden=32, bottleneck=16, prototypes=64),
    "ijepa": dict(predictor_dim=16, predictor_depth=1, predictor_heads=2, min_keep=2),
    "mae": dict(decoder_dim=16, decoder_depth=1, decoder_heads=2),
    "tjepa": dict(predictor_dim=16, predictor_depth=1, predictor_heads=2),
    "sjepa": dict(predictor_dim=16, predictor_depth=1, predictor_heads=2, min_block=2),
    "timedrl": dict(),
    "twotower": dict(projector=[32, 16]),
    "sarjepa": dict(window=2, n_windows=2, scales=[1, 2], predictor_dim=16, predictor_depth=1, predictor_heads=2),
    "seqjepa": dict(action_dim=16, depth=1, heads=2, predictor_hidden=32),
    "cvrl": dict(projector=[32, 16]),
    "vcop": dict(clip_frames=3, gap=1),  # clips of 3+ frames: PyTorch's CPU bf16 Conv3d weight gradient is garbage (1e38) on 2-frame inputs
    "iicc": dict(prototypes=16, slice_prototypes=16, slice_projector=[32, 16]),
    "adljepa": dict(predictor_depth=1),
    "collossl": dict(),
    "actjepa": dict(context_steps=4, chunk=4, predictor_dim=16, predictor_depth=1, predictor_heads=2),
    "depict": dict(clusters=4),
    "sie": dict(equi=16, projector=[32, 32]),
    "dinov3": dict(hidden=64, bottleneck=32, prototypes=128, ibot_prototypes=128),
    "scatsimclr": dict(pretext_widths=[32, 64]),
    "interclr": dict(queue=64, projector=[32, 16], negatives=16, semihard_pool=32, clusters=4),
    "gsimclr": dict(),
    "gedi": dict(sgld_steps=2, buffer=64),
}
SMOKE_VIT = dict(timm_name="vit_tiny_patch16_224", patch_size=8, timm_kwargs=dict(depth=1, embed_dim=32, num_heads=2))


def paper_setup(name: str, smoke: bool) -> dict:
    """Model, method parameters, sample shape, views, batch per device and optimizer of ``name``."""
    cfg = yaml.safe_load((ROOT / "examples" / "cluster" / CONFIGS[name]).read_text())
    data, model, optim = cfg.get("data", {}), dict(cfg["model"]), cfg.get("optim", {})
    params = {k: v for k, v in cfg["method"].items() if k != "name"}
    groups = None  # a trajectory's (observation, action) widths
    batch = cfg["train"]["batch_size"] // cfg.get("scaling", {}).get("num_workers", 1)
    local = (data.get("local_crops", 0), data.get("local_size", 96)) if data.get("views") == "dino" else (0, 0)
    if model["backbone"] == "timm":
        size = data.get("image_size", 224)
        shape = (3, size, size)
        if "vit" in model["timm_name"]:
            model["timm_name"] = VIT_B
    elif model["backbone"] in ("cnn", "scatnet"):  # an image folder of image_size squares
        shape = (3, data["image_size"], data["image_size"])
    elif data.get("name") == "video_folder":  # a clip as the views see it: a temporal crop, or the whole clip
        shape = (3, data.get("view_frames") or data["clip_frames"], data["frame_size"], data["frame_size"])
    elif data.get("name") == "nifti":  # a volume of volume_size cubed
        shape = (1, data["volume_size"], data["volume_size"], data["volume_size"])
    elif data.get("name") == "point_folder":  # a scan of num_points points
        shape = (data["num_points"], data.get("point_columns", 4))
    elif data.get("name") == "sensor_npz":  # a window of the config's devices: RealWorld's 7 x 6 channels x 150 samples
        shape = (7, 6, 150)
    elif data.get("name") == "trajectory_parquet":  # a window of ALOHA's steps: 14 joint positions, 14 joint targets
        shape, groups = (data["horizon"], 28), (14, 14)
    elif model["backbone"] == "vit1d":
        shape = (len(data["leads"]), data["signal_length"])
    else:
        columns = data["columns"]
        shape = (len(columns["numerical"]) + sum(CATEGORIES[c] for c in columns.get("categorical", [])),)
    if smoke:
        params.update(SMOKE_METHOD[name])
        batch, local = 8, (2, 16) if local[0] else (0, 0)
        if model["backbone"] == "timm":
            shape = (3, 32, 32)
            model.update(SMOKE_VIT if "vit" in model["timm_name"] else dict(timm_name="resnet10t", small_stem=False))  # its stem is no conv1
            model["timm_kwargs"] = {**cfg["model"].get("timm_kwargs", {}), **model.get("timm_kwargs", {})}
        elif model["backbone"] in ("cnn", "scatnet"):
            model.update(embed_dim=16, width=4, depth=2 if model["backbone"] == "cnn" else 1)
            shape = (3, 16, 16)
        elif model["backbone"] == "trajectory_transformer":
            model.update(embed_dim=16, depth=1, heads=2)
            shape, groups = (8, 4), (3, 1)
        elif model["backbone"] == "device_cnn":
            model.update(embed_dim=16, width=4, depth=2)
            shape = (3, 6, 32)
        elif model["backbone"] == "bev":
            model = dict(backbone="bev", embed_dim=16, width=4, depth=2, bev_cells=8, point_range=model["point_range"])
            shape = (256, shape[1])
        elif model["backbone"] == "slice_cnn":
            model = dict(backbone="slice_cnn", embed_dim=16, width=4, depth=2, heads=2, slice_layers=1)
            shape = (1, 4, 16, 16)
        elif len(shape) == 4:
            model = dict(backbone="cnn3d", embed_dim=16, width=4, depth=2)
            shape = (3, 12, 16, 16)
        else:
            model.update(embed_dim=16, depth=1, heads=2)
            shape = (2, 200) if model["backbone"] == "vit1d" else shape
    n_views = METHODS[name].n_views
    label = model.get("timm_name") or model.get("video_resnet") or f"{model['backbone']} {model['embed_dim']}x{model['depth']}"
    bank = (64 if smoke else BANKS[name]) if name in BANKS else None
    return dict(model=model, params=params, shape=shape, groups=groups, n_views=n_views, local=local, batch=batch, optim=optim, label=label,
                bank=bank)


def build(name: str, setup: dict):
    torch.manual_seed(0)
    model = {"embed_dim": 128, "width": 32, "depth": 3, **setup["model"]}  # width/depth unused by timm models
    method = build_method(name, build_backbone(**backbone_kwargs(model, setup["shape"], setup["groups"])), **setup["params"])
    if setup["bank"]:
        method.prepare(range(setup["bank"]), setup["groups"])
    return method


def make_batches(method, setup: dict, device, count: int) -> list[dict]:
    """``count`` batches made once: random views on the device and the method's own masks."""
    b, shape = setup["batch"], setup["shape"]
    masks = method.masks()
    spread = setup["model"].get("point_range")  # point clouds: uniform over the square the BEV grid covers
    batches = []
    for _ in range(count):
        pixels = len(shape) in (3, 4)  # images and clips are intensities in [0, 1]; signals and table rows standardised
        draw = torch.rand if pixels else torch.randn
        if spread:
            views = [(2 * torch.rand(b, *shape, device=device) - 1) * spread for _ in range(setup["n_views"])]
        else:
            views = [draw(b, *shape, device=device) for _ in range(setup["n_views"])]
        n_local, size = setup["local"]
        views += [draw(b, shape[0], size, size, device=device) for _ in range(n_local)]
        batch = {"views": views}
        if setup["bank"]:
            batch["index"] = torch.randint(setup["bank"], (b,), device=device)
        if masks is not None:
            batch.update({k: (v.to(device) if torch.is_tensor(v) else [t.to(device) for t in v]) for k, v in masks(b).items()})
        batches.append(batch)
    return batches


def engine_for(method, setup: dict, mode: str, device, total_steps: int, backend: str = "inductor") -> Engine:
    o = setup["optim"]
    on_gpu = device.type == "cuda"
    fast = mode == "engine"
    channels_last = fast and has_conv2d(method)
    if channels_last:
        to_channels_last(method)
    opt = build_optimizer(
        method, o.get("name", "adamw"), o.get("lr", 1e-3), o.get("weight_decay", 0.0), o.get("momentum", 0.9),
        tuple(o.get("betas", (0.9, 0.999))), o.get("lars_eta", 0.02), fused=fast and on_gpu,
    )
    return Engine(
        method, method, opt, total_steps=total_steps, warmup_steps=1, precision="fp32" if mode == "eager fp32" else "bf16",
        device=device, compile=fast, compile_backend=backend, channels_last=channels_last,
    )


def per_s(rate: float) -> str:
    """A rate as the table prints it: whole numbers, three digits below 10 (a slow CPU smoke step
    of 16 s for a batch of 8 is 0.5 samples/s, not 0)."""
    return f"{rate:,.0f}" if rate >= 10 else f"{rate:.3g}"


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_flops(name: str, setup: dict, device) -> float:
    """FLOPs of one training step (forward + backward) counted by torch's FLOP counter; NaN where
    the counter cannot follow the step (its module hooks refuse GEDI's ``autograd.grad`` of the
    energy with respect to the images)."""
    method = build(name, setup).to(device)
    batch = make_batches(method, setup, device, 1)[0]
    torch.manual_seed(1)
    try:
        with FlopCounterMode(display=False) as counter:
            method(batch)["loss"].backward()
    except RuntimeError:
        return math.nan
    finally:
        del method, batch
    return float(counter.get_total_flops())


def matmul_peak(device, smoke: bool) -> float:
    """bf16 matmul TFLOP/s on this device: the best of a few timed runs of large square products."""
    n, reps = (512, 3) if smoke else (8192, 50)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    best = 0.0
    for _ in range(3):
        a @ b
        sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t) / 1e12)
    return best


def measure(name: str, setup: dict, mode: str, device, warmup: int, steps: int, backend: str) -> dict:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    counters.clear()
    method = build(name, setup).to(device)
    engine = engine_for(method, setup, mode, device, warmup + steps, backend)
    batches = make_batches(method, setup, device, min(warmup + steps, 8))
    t0 = time.perf_counter()
    for i in range(warmup):
        engine.train_step(batches[i % len(batches)])
    sync(device)
    t1 = time.perf_counter()
    for i in range(steps):
        logs = engine.train_step(batches[(warmup + i) % len(batches)])
    sync(device)
    t2 = time.perf_counter()
    if not math.isfinite(logs["loss"]):
        raise FloatingPointError(f"{name} {mode}: loss {logs['loss']}")
    row = dict(rate=setup["batch"] * steps / (t2 - t1), step_s=(t2 - t1) / steps, warmup_s=t1 - t0, note="")
    row["peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    if engine.compile_fallback:
        row["note"] = f"compile fallback: {engine.compile_fallback}"
    elif engine.compiled is not None:
        breaks = sum(counters["graph_break"].values())
        row["note"] = f"{counters['frames']['ok']} compiled frame(s), {breaks} graph break(s)"
    del engine, method, batches
    return row


def release(device) -> None:
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def table(rows: list[dict], peak: float) -> str:
    head = f"{'method':<12} {'model':<22} {'batch':>5} {'mode':<11} {'samples/s':>10} {'ms/step':>8} {'TFLOP/s':>8} {'% peak':>7} {'peak GB':>8} {'x fp32':>7}  notes"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "rate" not in r:
            lines.append(f"{r['method']:<12} {r['label']:<22} {r['batch']:>5} {r['mode']:<11} {'-':>10} {'-':>8} {'-':>8} {'-':>7} {'-':>8} {'-':>7}  {r['note']}")
            continue
        tflops = r["flops"] * r["rate"] / r["batch"] / 1e12
        base = next((b for b in rows if b["method"] == r["method"] and b["mode"] == "eager fp32" and "rate" in b), None)
        speedup = f"{r['rate'] / base['rate']:.2f}" if base else "-"
        gb = "-" if math.isnan(r["peak_gb"]) else f"{r['peak_gb']:.1f}"
        rate, share = ("-", "-") if math.isnan(tflops) else (f"{tflops:.3g}", f"{100 * tflops / peak:.1f}%")
        lines.append(
            f"{r['method']:<12} {r['label']:<22} {r['batch']:>5} {r['mode']:<11} {per_s(r['rate']):>10} {1000 * r['step_s']:>8.1f} "
            f"{rate:>8} {share:>7} {gb:>8} {speedup:>7}  {r['note']}"
        )
    return "\n".join(lines)


def targets(rows: list[dict], peak: float) -> str:
    """The issue's targets, met or not, from the rows measured."""
    done = {(r["method"], r["mode"]): r for r in rows if "rate" in r}
    out = []
    ijepa = done.get(("ijepa", "engine"))
    if ijepa:
        out.append(f"I-JEPA ViT-B/16 bf16 compiled: {ijepa['rate']:,.0f} img/s (target >= {TARGET_IJEPA:,.0f}: {'met' if ijepa['rate'] >= TARGET_IJEPA else 'not met'})")
    vits = [r for (m, mode), r in done.items() if mode == "engine" and r["label"] == VIT_B]
    shares = {r["method"]: r["flops"] * r["rate"] / r["batch"] / 1e12 / peak for r in vits}
    if shares:
        listed = ", ".join(f"{m} {100 * s:.0f}%" for m, s in shares.items())
        out.append(f"ViT-B methods at >= {100 * TARGET_PEAK:.0f}% of the bf16 matmul peak: {sum(s >= TARGET_PEAK for s in shares.values())}/{len(shares)} ({listed})")
    pairs = [(m, r, done[(m, "eager bf16")]) for (m, mode), r in done.items() if mode == "engine" and (m, "eager bf16") in done]
    slower = [m for m, c, e in pairs if c["rate"] < e["rate"]]
    if pairs:
        out.append(f"compiled not slower than eager bf16: {len(pairs) - len(slower)}/{len(pairs)}" + (f" (slower: {', '.join(slower)})" if slower else ""))
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: every method and mode once")
    parser.add_argument("--methods", nargs="+", choices=sorted(CONFIGS), default=sorted(CONFIGS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (compilation; default 4, smoke 1)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10, smoke 1)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip what is left after this many seconds")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; smoke: aot_eager, "
                        "which traces the same graphs without generating kernels: tests/unit/test_compile.py covers Inductor on the CPU)")
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.smoke:
        parser.error("no CUDA device: pass --smoke to run the tiny CPU version")
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 4)
    steps = args.steps if args.steps is not None else (1 if args.smoke else 10)
    backend = args.compile_backend or ("aot_eager" if args.smoke else "inductor")
    started = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    peak = matmul_peak(device, args.smoke)
    print(f"device: {name}; bf16 matmul peak measured: {peak:.3g} TFLOP/s; torch {torch.__version__}; compile backend {backend}", flush=True)

    setups = {m: paper_setup(m, args.smoke) for m in args.methods}
    flops: dict[str, float] = {}
    rows = []
    for mode in [m for m in MODES if m in args.modes]:
        for method in args.methods:
            s = setups[method]
            row = dict(method=method, label=s["label"], batch=s["batch"], mode=mode, note="")
            rows.append(row)
            if time.perf_counter() - started > args.budget_s:
                row["note"] = f"skipped: the {args.budget_s:.0f} s budget is spent"
                continue
            try:
                if method not in flops:
                    flops[method] = step_flops(method, s, device)
                    release(device)
                row.update(measure(method, s, mode, device, warmup, steps, backend), flops=flops[method])
                print(f"{method:<12} {mode:<11} {per_s(row['rate']):>10} samples/s  (warm-up {row['warmup_s']:.1f} s) {row['note']}", flush=True)
            except torch.OutOfMemoryError as exc:
                row["note"] = f"out of memory: {str(exc).splitlines()[0]}"
                print(f"{method:<12} {mode:<11} {row['note']}", flush=True)
            finally:
                release(device)
    heavy = sorted(m for m in ("ray", "mlflow", "optuna") if m in sys.modules)
    print(f"\nimported: {'none of ray, mlflow, optuna' if not heavy else ', '.join(heavy)}; wall {time.perf_counter() - started:.0f} s")
    print(table(rows, peak))
    summary = targets(rows, peak)
    if summary and not args.smoke:
        print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
