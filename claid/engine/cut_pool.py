"""The cutter beside the forwards: a pool of cut workers fed by a bounded queue
that spans batches.

The k-sums cutter runs on the CPU (~0.08-0.2 s per image) while the networks run
on the accelerator (a few ms per image). If each batch's cuts were collected in
the same step that submitted them, the device would wait for every cut, and at
most ``batch_size`` cuts would ever run at once. Here a batch's cuts are
submitted and the step returns; the batch is described (pooled) in a later step,
once its cuts are done, so the device runs batch i+1's forwards while batch i is
cut. ``max_pending`` batches may wait for their cuts; past that the step blocks
on the oldest (the queue is bounded, so memory is too: pending batches keep their
descriptor feature maps).

Workers are threads or processes. Threads share memory and start instantly; the
k-sums kernels are numba ``nogil``, but ~15 % of a cut holds the GIL, so threads
in one process top out near 1 / 0.15 cores. Processes (``spawn``: safe beside an
initialised CUDA context) take a few seconds to start and pickle each PatchGrid
across, and scale with the cores.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

from claid.structures import PatchGrid, RegionTree

__all__ = ["CUT_POOLS", "CutQueue", "PendingBatch", "available_cores", "cut_pool_size",
           "decode_workers", "timed_cut"]

CUT_POOLS = ("thread", "process")


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity (what a batch scheduler or
    ``taskset`` grants), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # platforms without sched_getaffinity (macOS)
        return os.cpu_count() or 1


def decode_workers(num_workers: int | None, *, ranks_per_node: int,
                   cores: int | None = None) -> int:
    """Decoding processes of one rank: ``num_workers`` when given, else a quarter of
    this rank's share of the node's cores (at most 8; at least 1 when it has 2+
    cores, else 0): JPEG decoding and resizing need far fewer cores than the cuts."""
    if num_workers is not None:
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0 or null, got {num_workers!r}")
        return num_workers
    if ranks_per_node < 1:
        raise ValueError(f"ranks_per_node must be >= 1, got {ranks_per_node}")
    share = (cores or available_cores()) // ranks_per_node
    return 0 if share < 2 else min(8, max(1, share // 4))


def cut_pool_size(cut_workers: int | None, *, on_accelerator: bool, num_workers: int | None,
                  ranks_per_node: int, cores: int | None = None) -> int:
    """Cut workers of one rank.

    Args:
        cut_workers: an explicit count (>= 0; 0 cuts inline), or None for the default.
        on_accelerator: the forwards run on a device, not on these cores.
        num_workers: this rank's decoding processes (None: ``decode_workers``' default).
        ranks_per_node: ranks sharing this node's cores (devices per node).
        cores: the node's usable cores (default: ``available_cores()``).
    Returns:
        ``cut_workers`` when given. Otherwise 0 on a CPU run (the forwards already
        use every core), else this rank's share of the cores minus its decoding
        workers and its main thread, at least 1.
    """
    if cut_workers is not None:
        if not isinstance(cut_workers, int) or cut_workers < 0:
            raise ValueError(f"cut_workers must be an integer >= 0 or null, got {cut_workers!r}")
        return cut_workers
    if not on_accelerator:
        return 0
    if ranks_per_node < 1:
        raise ValueError(f"ranks_per_node must be >= 1, got {ranks_per_node}")
    share = (cores or available_cores()) // ranks_per_node
    decoders = decode_workers(num_workers, ranks_per_node=ranks_per_node, cores=cores)
    return max(1, share - decoders - 1)


def check_cut_settings(workers: int | None, kind: str, queue: int, *, auto: bool) -> None:
    """Raise ValueError unless ``workers`` (``engine.cut_workers``: an integer >= 0, or
    None for the default when ``auto``), ``kind`` (``cut_pool``) and ``queue``
    (``cut_queue``: batches in flight, >= 1) are valid."""
    if not (auto and workers is None) and (not isinstance(workers, int) or workers < 0):
        allowed = " or null" if auto else ""
        raise ValueError(f"cut_workers must be an integer >= 0{allowed}, got {workers!r}")
    if kind not in CUT_POOLS:
        raise ValueError(f"cut_pool must be one of {CUT_POOLS}, got {kind!r}")
    if not isinstance(queue, int) or queue < 1:
        raise ValueError(f"cut_queue must be an integer >= 1, got {queue!r}")


def timed_cut(cutter: Callable[[PatchGrid], RegionTree],
              patch_grid: PatchGrid) -> tuple[RegionTree, float]:
    """``cutter(patch_grid)`` and the seconds it took (in the worker)."""
    started = time.perf_counter()
    tree = cutter(patch_grid)
    return tree, time.perf_counter() - started


def _init_cut_process() -> None:
    # One cut per process at a time: BLAS (the affinity's token products) and torch
    # pools sized to the whole node would oversubscribe the cores the other workers use.
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


def _started() -> bool:
    """A no-op task: submitting one per worker starts the processes early."""
    return True


@dataclass
class PendingBatch:
    """One batch between its forwards and its pooling.

    ``cuts`` holds, per image, a Future of ``(tree, seconds)`` (or the pair itself
    when cut inline); ``payload`` is whatever the caller needs to describe the
    batch afterwards (feature maps, scales, skipped files).
    """

    patch_grids: list[PatchGrid]
    payload: dict
    cuts: list = field(default_factory=list)

    def done(self) -> bool:
        return all(not isinstance(c, Future) or c.done() for c in self.cuts)


class CutQueue:
    """Cuts batches in a worker pool; hands them back, in order, once cut.

    Args:
        cutter: callable PatchGrid -> RegionTree (picklable for ``kind="process"``).
        workers: pool size; 0 cuts inline in ``submit``.
        kind: ``thread`` or ``process``.
        max_pending: batches that may wait for their cuts before ``submit`` blocks
            on the oldest (>= 1).

    ``wait_seconds`` sums the time the caller was blocked on cuts (the device sat
    idle for it), ``cut_seconds`` the time the workers spent cutting,
    ``submit_seconds`` the time spent handing cuts over (inline cuts included).
    """

    def __init__(self, cutter: Callable[[PatchGrid], RegionTree], *, workers: int,
                 kind: str = "thread", max_pending: int = 2) -> None:
        check_cut_settings(workers, kind, max_pending, auto=False)
        self.cutter = cutter
        self.workers = workers
        self.kind = kind
        self.max_pending = max_pending
        self.pending: deque[PendingBatch] = deque()
        self.wait_seconds = 0.0
        self.cut_seconds = 0.0
        self.submit_seconds = 0.0
        self._executor: Executor | None = None
        if workers and kind == "thread":
            self._executor = ThreadPoolExecutor(workers, thread_name_prefix="claid-cut")
        elif workers:
            self._executor = ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_cut_process)
            # processes start on demand and take seconds to import: start them all
            # now, so that they get ready while the first batches are decoded and run
            for _ in range(workers):
                self._executor.submit(_started)

    def submit(self, batch: PendingBatch) -> list[PendingBatch]:
        """Queue ``batch``'s cuts; return the batches now cut (oldest first), waiting
        only while more than ``max_pending`` batches are queued."""
        started = time.perf_counter()
        if self._executor is None:
            batch.cuts = [timed_cut(self.cutter, grid) for grid in batch.patch_grids]
        else:
            batch.cuts = [self._executor.submit(timed_cut, self.cutter, grid)
                          for grid in batch.patch_grids]
        self.submit_seconds += time.perf_counter() - started
        self.pending.append(batch)
        ready = []
        while self.pending and (len(self.pending) > self.max_pending or self.pending[0].done()):
            ready.append(self._finish(self.pending.popleft()))
        return ready

    def drain(self) -> list[PendingBatch]:
        """Every queued batch, cut (blocks until the last cut is done)."""
        ready = [self._finish(batch) for batch in self.pending]
        self.pending.clear()
        return ready

    def _finish(self, batch: PendingBatch) -> PendingBatch:
        started = time.perf_counter()
        results = [c.result() if isinstance(c, Future) else c for c in batch.cuts]
        self.wait_seconds += time.perf_counter() - started
        batch.cuts = [tree for tree, _ in results]
        self.cut_seconds += sum(seconds for _, seconds in results)
        return batch

    def close(self, cancel: bool = False) -> None:
        """Stop the workers (``cancel``: drop queued cuts, e.g. after an error)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=cancel)
            self._executor = None
        if cancel:
            self.pending.clear()
