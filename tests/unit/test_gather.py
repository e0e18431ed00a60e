"""Two gloo processes with DDP give the one-process, global-batch result: the gradient of every
method (gathered negatives, across-worker statistics, DINO's all-reduced centre), and the weights
after several optimizer steps of a contrastive method."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from selfsup.methods import build_method
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


def worker(rank, world, rendezvous, name, out):
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    model = nn.parallel.DistributedDataParallel(make(name))
    shard = [v.chunk(world)[rank] for v in views()]
    model({"views": shard})["loss"].backward()
    if rank == 0:
        torch.save([p.grad for p in model.module.parameters() if p.requires_grad], out)
    dist.barrier()  # neither process tears down gloo while the other still talks to it
    dist.destroy_process_group()


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_two_workers_match_global_batch(tmp_path, name):
    single = make(name)
    single({"views": views()})["loss"].backward()
    out = tmp_path / "grads.pt"
    mp.spawn(worker, args=(2, str(tmp_path / "rendezvous"), name, str(out)), nprocs=2, join=True)
    expected_grads = [p.grad for p in single.parameters() if p.requires_grad]
    got_grads = torch.load(out)
    assert len(expected_grads) == len(got_grads)
    for expected, got in zip(expected_grads, got_grads):
        assert torch.allclose(expected, got, rtol=1e-5, atol=1e-6)


STEPS = 3


def batches():
    g = torch.Generator().manual_seed(2)
    return [[torch.randn(8, 1, 4, 4, generator=g) for _ in range(2)] for _ in range(STEPS)]


def train(model, method, shard):
    engine = Engine(model, method, build_optimizer(method, lr=0.05, weight_decay=0.01), total_steps=STEPS, warmup_steps=1)
    for views in batches():
        engine.train_step({"views": [shard(v) for v in views]})
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


def train_worker(rank, world, rendezvous, out):
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    method = make("simclr")
    state = train(nn.parallel.DistributedDataParallel(method), method, lambda v: v.chunk(world)[rank])
    if rank == 0:
        torch.save(state, out)
    dist.barrier()
    dist.destroy_process_group()


def test_two_worker_training_matches_one_worker(tmp_path):
    single = make("simclr")
    expected = train(single, single, lambda v: v)
    out = tmp_path / "state.pt"
    mp.spawn(train_worker, args=(2, str(tmp_path / "rendezvous"), str(out)), nprocs=2, join=True)
    got = torch.load(out)
    assert expected.keys() == got.keys()
    for k in expected:
        assert torch.allclose(expected[k], got[k], rtol=1e-5, atol=1e-6), k
    assert not torch.allclose(expected["head.0.weight"], make("simclr").state_dict()["head.0.weight"])
