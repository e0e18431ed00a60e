"""Ray Data ingest (``data.ingest: ray_data``): a worker's batches read, decoded and made into
views by Ray Data tasks on whichever nodes have CPUs, streamed to the worker with prefetching.

Each epoch a worker turns its own batches of sample indices (the ``DistributedSampler`` /
:class:`~selfsup.data.views.SeededBatches` of the loader path: the same indices, the same seed of
``(seed, rank, epoch, batch)`` per batch) into a Ray Dataset of one row per batch; ``map`` makes
each row the batch the DataLoader would have made — reading the samples (a shard's ranged reads,
a file's decode), the view recipe, the method's masks — in a Ray task of ``data.preprocess_cpus``
CPUs, on nodes that offer ``data.preprocess_resource`` when it is set (CPU-only nodes of a mixed
cluster: ``ray start --resources '{"preprocess": N}'``, one unit per task); the worker iterates
the results in order, ``data.prefetch_batches`` ahead. So a batch is bitwise the loader path's,
wherever it was made, and a restarted run replays its epoch's views exactly.

Why per-worker datasets of index batches and not one ``streaming_split`` of ``read_webdataset``:
a streaming split hands rows to whichever worker asks first, so neither which samples a worker
sees nor the epoch a view is drawn for is known to the task that makes it; the index rows carry
both. Ray Data does not resume an execution mid-epoch: a restarted worker starts its epoch again
(from the epoch's checkpoint, as the loader path does). The nodes that made batches are recorded
(:attr:`RayDataBatches.nodes`, the ``selfsup.preprocess_nodes`` tag).
"""

from __future__ import annotations

import io
import threading

import pyarrow as pa
import ray
import ray.data
import torch

from selfsup.data.splits import Skipped
from selfsup.data.views import SeededBatch, SeededBatches, SeededSamples, ViewCollate

torch.serialization.add_safe_globals([Skipped])


class BatchMaker:
    """One training batch from one row ``{"indices", "seed"}``, in a Ray Data task: the samples
    (``SeededSamples``) collated into views and masks (``ViewCollate``), as ``torch.save`` bytes
    (read back with ``weights_only``), with the node."""

    def __init__(self, samples: SeededSamples, collate: ViewCollate):
        self.samples, self.collate = samples, collate

    def __call__(self, row: dict) -> dict:
        indices = SeededBatch(int(i) for i in row["indices"])
        indices.seed = int(row["seed"])
        batch = self.collate(self.samples.__getitems__(indices))
        out = io.BytesIO()
        torch.save(batch, out)
        return {"batch": out.getvalue(), "node": ray.get_runtime_context().get_node_id()}


def make_batch(row: dict, maker: BatchMaker) -> dict:
    return maker(row)


class RayDataBatches:
    """The loader of a worker under ``data.ingest: ray_data``: iterating it yields this epoch's
    batches of ``batches`` (call its ``set_epoch`` first), as a ``DataLoader`` with ``collate``
    over ``samples`` would, made by Ray Data tasks of ``cpus`` CPUs (and one unit of ``resource``)."""

    def __init__(self, samples: SeededSamples, batches: SeededBatches, collate: ViewCollate, cpus: float, resource: str | None,
                 prefetch: int):
        self.batches, self.cpus, self.resource, self.prefetch = batches, cpus, resource, prefetch
        self.maker = BatchMaker(samples, collate)
        self.nodes: set[str] = set()
        self._started: tuple[int, threading.Thread, list] | None = None

    def __len__(self) -> int:
        return len(self.batches)

    def dataset(self, epoch: int) -> ray.data.Dataset:
        """Epoch ``epoch``'s batches as a Ray Dataset: one row (and block) per batch, made in order."""
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        now = self.batches.epoch
        self.batches.set_epoch(epoch)
        rows = [{"indices": list(b), "seed": b.seed} for b in self.batches]
        self.batches.set_epoch(now)
        return ray.data.from_items(rows, override_num_blocks=len(rows)).map(
            make_batch, fn_kwargs={"maker": self.maker}, num_cpus=self.cpus, resources={self.resource: 1} if self.resource else None,
        )

    def batches_of(self, epoch: int):
        for rows in self.dataset(epoch).iter_batches(batch_size=1, prefetch_batches=self.prefetch, batch_format="pyarrow"):
            self.nodes.add(rows.column("node")[0].as_py())
            # read in place in Arrow's buffer; tensors, containers and Skipped only (no code runs)
            yield torch.load(pa.BufferReader(rows.column("batch")[0].as_buffer()), weights_only=True)

    def start(self, epoch: int) -> None:
        """Start making epoch ``epoch``'s batches now, in the background (the worker calls it before
        evaluating the epoch before): its first batch is ready when the epoch begins, where a Ray
        Data execution takes seconds to produce one."""
        batches = self.batches_of(epoch)
        first: list = []

        def fetch():
            try:
                first.append(next(batches, None))
            except BaseException as exc:  # noqa: BLE001  (raised again in the epoch that asks for it)
                first.append(exc)

        thread = threading.Thread(target=fetch, daemon=True)
        thread.start()
        self._started = (epoch, thread, [batches, first])

    def __iter__(self):
        epoch = self.batches.epoch
        if self._started is None or self._started[0] != epoch:
            yield from self.batches_of(epoch)
            return
        _, thread, (batches, first) = self._started
        self._started = None
        thread.join()
        if isinstance(first[0], BaseException):
            raise first[0]
        if first[0] is not None:
            yield first[0]
            yield from batches
