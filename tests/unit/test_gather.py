"""Two gloo processes with DDP give the one-process, global-batch result: the gradient of every
method (gathered negatives, across-worker statistics, DINO's all-reduced centre), and the weights
after several optimizer steps (SimCLR; DINO through its frozen-last-layer phase; I-JEPA and MAE
with their masks sharded like the images)."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from selfsup.data.views import ViewCollate
from selfsup.methods import build_method
from selfsup.models.backbones import build_backbone
from selfsup.train import sharding
from selfsup.train.engine import Engine, build_optimizer


class Flat(nn.Module):
    """Backbone without batch norm, so that per-worker statistics cannot differ."""

    embed_dim = 6

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 6))

    def forward(self, x):
        return self.net(x)


PARAMS = {
    "simclr": dict(projector=[5], temperature=0.3),
    "vicreg": dict(projector=[5]),
    "barlowtwins": dict(projector=[5]),
    "mocov3": dict(projector=[5], predictor=[5], temperature=0.3),
    "byol": dict(projector=[5], predictor=[5]),
    "dino": dict(hidden=8, bottleneck=4, prototypes=5),
}


def make(name):
    torch.manual_seed(0)
    return build_method(name, Flat(), **PARAMS[name])


def views():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(8, 1, 4, 4, generator=g), torch.randn(8, 1, 4, 4, generator=g)]


def leave():
    """End a spawned rank once both are done: neither tears down gloo while the other still talks
    to it, and the process skips C++ static destructors, which after the interpreter has finished
    abort now and then on a loaded machine ("terminate called without an active exception",
    SIGABRT with no Python frame: about one spawn in 60 here, and in CI)."""
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


def worker(rank, world, rendezvous, out):
    """Every method of :data:`PARAMS` in one process group (one spawn for all of them)."""
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    grads = {}
    for name in sorted(PARAMS):
        model = nn.parallel.DistributedDataParallel(make(name))
        shard = [v.chunk(world)[rank] for v in views()]
        model({"views": shard})["loss"].backward()
        grads[name] = [p.grad for p in model.module.parameters() if p.requires_grad]
    if rank == 0:
        torch.save(grads, out)
    leave()


def test_two_workers_match_global_batch(tmp_path):
    out = tmp_path / "grads.pt"
    mp.spawn(worker, args=(2, str(tmp_path / "rendezvous"), str(out)), nprocs=2, join=True)
    got = torch.load(out)
    for name in sorted(PARAMS):
        single = make(name)
        single({"views": views()})["loss"].backward()
        expected_grads = [p.grad for p in single.parameters() if p.requires_grad]
        assert len(expected_grads) == len(got[name]), name
        for expected, grad in zip(expected_grads, got[name]):
            assert torch.allclose(expected, grad, rtol=1e-5, atol=1e-6), name


STEPS = 3
TRAINED = {
    "simclr": dict(projector=[5], temperature=0.3),
    "dino": dict(hidden=8, bottleneck=4, prototypes=5, freeze_last_layer=0.5),  # frozen prototypes: no gradient in step 1
    "ijepa": dict(predictor_dim=8, predictor_depth=1, predictor_heads=2, n_pred=2, min_keep=2),
    "mae": dict(decoder_dim=8, decoder_depth=1, decoder_heads=2),
    "tjepa": dict(predictor_dim=8, predictor_depth=1, predictor_heads=2, n_pred=2),
    "sjepa": dict(predictor_dim=8, predictor_depth=1, predictor_heads=2, min_block=2),
}
VIT = dict(depth=1, embed_dim=8, num_heads=2, class_token=False, global_pool="avg")  # fc_norm: unused by masked methods
INPUT = {"ijepa": (1, 8, 8), "mae": (1, 8, 8), "tjepa": (6,), "sjepa": (2, 32)}  # (1, 4, 4) for the others


def make_trained(name):
    torch.manual_seed(0)
    if name in ("ijepa", "mae"):
        backbone = build_backbone("timm", INPUT[name], 0, 0, 0, timm_name="vit_tiny_patch16_224", patch_size=2, timm_kwargs=VIT)
    elif name == "tjepa":
        backbone = build_backbone("ft_transformer", INPUT[name], 8, 0, 1, heads=2)
    elif name == "sjepa":
        backbone = build_backbone("vit1d", INPUT[name], 8, 0, 1, patch_size=4, heads=2)
    else:
        backbone = Flat()
    return build_method(name, backbone, **TRAINED[name])


def batches(method):
    torch.manual_seed(2)
    n_views = 1 if method.masks() else 2
    collate = ViewCollate(lambda x: [x + 0.1 * torch.randn_like(x) for _ in range(n_views)], method.masks())
    return [collate(list(torch.randn(8, *INPUT.get(method.name, (1, 4, 4))))) for _ in range(STEPS)]


def shard(batch, rank, world):
    """Rank ``rank``'s slice of every tensor in the batch (views and mask indices alike)."""
    if torch.is_tensor(batch):
        return batch.chunk(world)[rank]
    if isinstance(batch, dict):
        return {k: shard(v, rank, world) for k, v in batch.items()}
    return [shard(v, rank, world) for v in batch]


def train(model, method, rank=0, world=1):
    # LARS leaves biases to plain SGD: an attention key bias has an exactly-zero gradient, whose
    # rounding noise Adam would blow up to full-size, run-dependent steps
    engine = Engine(model, method, build_optimizer(method, "lars", lr=0.05, weight_decay=0.01), total_steps=STEPS, warmup_steps=1)
    for batch in batches(method):
        engine.train_step(shard(batch, rank, world))
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


def train_worker(rank, world, rendezvous, out):
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    states = {}
    for name in sorted(TRAINED):
        method = make_trained(name)
        model = nn.parallel.DistributedDataParallel(method, find_unused_parameters=method.unused_parameters)
        states[name] = train(model, method, rank, world)
    if rank == 0:
        torch.save(states, out)
    leave()


def test_two_worker_training_matches_one_worker(tmp_path):
    out = tmp_path / "state.pt"
    mp.spawn(train_worker, args=(2, str(tmp_path / "rendezvous"), str(out)), nprocs=2, join=True)
    states = torch.load(out)
    for name in sorted(TRAINED):
        single = make_trained(name)
        expected, got = train(single, single), states[name]
        assert expected.keys() == got.keys(), name
        for k in expected:
            assert torch.allclose(expected[k], got[k], rtol=1e-4, atol=1e-5), (name, k)
        initial = make_trained(name).state_dict()
        assert any(not torch.allclose(expected[k], initial[k]) for k in expected if k.startswith("backbone.")), name


def fsdp_worker(rank, world, rendezvous, out):
    """Train sharded: weights after every step (full state, from rank 0), then again from the
    checkpointed state of step 1 in a freshly sharded method, read by rank 0 alone and scattered
    (the other ranks pass nothing); and what each rank holds. Every method of :data:`TRAINED`."""
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    results = {}
    for name in sorted(TRAINED):
        method = make_trained(name)
        total = sum(p.numel() for p in method.parameters())
        blocks = sharding.block_groups(sharding.shard(method))
        held = [None] * world
        dist.all_gather_object(held, sum(p.to_local().numel() for p in method.parameters()))
        engine = Engine(method, method, build_optimizer(method, "lars", lr=0.05, weight_decay=0.01), total_steps=STEPS, warmup_steps=1)
        checkpoint = os.path.join(os.path.dirname(out), f"{name}-step1.pt")
        for step, batch in enumerate(batches(method), 1):
            engine.train_step(shard(batch, rank, world))
            state = engine.state_dict()  # every rank gathers; rank 0 gets the state (it holds live buffers: save now)
            if rank == 0 and step == 1:
                torch.save(state, checkpoint)
        assert rank == 0 or state["method"] == {}, "only rank 0 holds the full state"
        dist.barrier()
        resumed = make_trained(name)
        sharding.shard(resumed)
        engine = Engine(resumed, resumed, build_optimizer(resumed, "lars", lr=0.05, weight_decay=0.01), total_steps=STEPS, warmup_steps=1)
        engine.load_state_dict(torch.load(checkpoint, weights_only=True) if rank == 0 else None)
        for batch in batches(resumed)[1:]:
            engine.train_step(shard(batch, rank, world))
        again = engine.state_dict()
        results[name] = {"trained": state["method"], "resumed": again["method"], "step": again["step"], "total": total, "held": held, "blocks": blocks}
    if rank == 0:
        torch.save(results, out)
    leave()


def test_fsdp_training_matches_one_worker(tmp_path):
    """scaling.strategy: fsdp: two sharded gloo workers train to the one-process weights (EMA
    targets, DINO's frozen prototypes and LARS on shards included), each holding about half
    of the parameters, and resume from a checkpoint of the full state, which rank 0 alone reads
    and scatters, to the same weights."""
    out = tmp_path / "fsdp.pt"
    mp.spawn(fsdp_worker, args=(2, str(tmp_path / "rendezvous"), str(out)), nprocs=2, join=True)
    results = torch.load(out)
    for name in sorted(TRAINED):
        single = make_trained(name)
        expected, got = train(single, single), results[name]
        assert (got["blocks"] > 0) == (name not in ("simclr", "dino")), name  # the Flat backbone has no transformer blocks
        # dimension 0 of each parameter is split, the larger piece on rank 0 (a (1, N, D) position
        # embedding is all there): tiny models split unevenly
        assert sum(got["held"]) == got["total"] and max(got["held"]) < 0.6 * got["total"], (name, got)
        for key in ("trained", "resumed"):
            assert expected.keys() == got[key].keys(), name
            for k in expected:
                assert torch.allclose(expected[k], got[key][k], rtol=1e-4, atol=1e-5), (name, key, k)
        assert got["step"] == STEPS, name


def panel_worker(rank, world, rendezvous, out):
    """Embed 2,049 rows on two ranks with a function that is a collective, as every forward is
    under FSDP: each rank counts its calls."""
    from datetime import timedelta

    from selfsup.metrics.panel import embed_all

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    calls = []

    def collective(b):
        calls.append(len(b))
        dist.all_reduce(torch.ones(1))
        return b[:, :3] * 2

    x = torch.arange(2049 * 4, dtype=torch.float32).reshape(2049, 4)
    z = embed_all(collective, x, "cpu")
    counts = [None] * world
    dist.all_gather_object(counts, len(calls))
    if rank == 0:
        torch.save({"z": torch.from_numpy(z), "counts": counts}, out)
    leave()


def test_sharded_evaluation_makes_the_same_calls_on_every_rank(tmp_path):
    """2,049 rows over 2 workers: ranks hold 1,025 and 1,024 rows, which in chunks of 1,024 was two
    forward calls on one rank and one on the other (an FSDP run hung there). The shards are padded:
    both make the same calls, and the gathered embeddings are every row's, in order."""
    out = tmp_path / "panel.pt"
    mp.spawn(panel_worker, args=(2, str(tmp_path / "rendezvous"), str(out)), nprocs=2, join=True)
    got = torch.load(out)
    assert got["counts"] == [2, 2]
    x = torch.arange(2049 * 4, dtype=torch.float32).reshape(2049, 4)
    assert torch.equal(got["z"], x[:, :3] * 2)
