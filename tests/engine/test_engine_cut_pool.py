"""The cut pool: its size from the CPU affinity, and a bounded queue that spans batches."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from claid.engine.cut_pool import (
    CutQueue,
    PendingBatch,
    available_cores,
    cut_pool_size,
    decode_workers,
)
from claid.structures import PatchGrid
from tests.engine.tiny_parts import tiny_cutter


def grids(count: int, seed: int = 0) -> list[PatchGrid]:
    rng = np.random.default_rng(seed)
    return [PatchGrid(tokens=rng.standard_normal((12, 4)).astype(np.float32), grid=(3, 4),
                      patch_size=8) for _ in range(count)]


def test_pool_size_follows_the_affinity_split_across_the_ranks_of_a_node(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(6)), raising=False)
    assert available_cores() == 6
    # 6 cores, 1 rank: 1 decoder (6 // 4), the main thread, 4 cutters
    assert cut_pool_size(None, on_accelerator=True, num_workers=None, ranks_per_node=1) == 4
    # 16 cores, 2 ranks, 2 decoders each: 8 - 2 - 1 per rank
    assert cut_pool_size(None, on_accelerator=True, num_workers=2, ranks_per_node=2,
                         cores=16) == 5
    # more ranks than cores still cut somewhere
    assert cut_pool_size(None, on_accelerator=True, num_workers=0, ranks_per_node=8,
                         cores=4) == 1
    assert cut_pool_size(None, on_accelerator=False, num_workers=0, ranks_per_node=1) == 0
    assert cut_pool_size(3, on_accelerator=False, num_workers=0, ranks_per_node=1) == 3
    assert decode_workers(None, ranks_per_node=1, cores=64) == 8
    assert decode_workers(None, ranks_per_node=2, cores=2) == 0
    with pytest.raises(ValueError, match="cut_workers"):
        cut_pool_size(-1, on_accelerator=True, num_workers=0, ranks_per_node=1)


def test_steps_do_not_wait_for_their_cuts_until_the_queue_is_full():
    """Cuts held back: two batches queue without blocking (the device would run the
    next forwards); a third must wait for the oldest, which comes back first."""
    release, released_before_return = threading.Event(), []

    def held_cutter(grid):
        release.wait(timeout=60)
        return tiny_cutter(grid)

    queue = CutQueue(held_cutter, workers=2, kind="thread", max_pending=2)
    try:
        first = PendingBatch(patch_grids=grids(2), payload={"name": "first"})
        second = PendingBatch(patch_grids=grids(2, 1), payload={"name": "second"})
        assert queue.submit(first) == [] and queue.submit(second) == []
        assert not release.is_set()  # both returned while every cut was still held

        def let_go():
            released_before_return.append(True)
            release.set()

        timer = threading.Timer(0.2, let_go)
        timer.start()
        third = PendingBatch(patch_grids=grids(1, 2), payload={"name": "third"})
        ready = queue.submit(third)
        assert released_before_return  # it blocked until the cuts could finish
        assert [b.payload["name"] for b in ready][0] == "first"
        rest = queue.drain()
        names = [b.payload["name"] for b in ready + rest]
        assert names == ["first", "second", "third"]
        for batch in ready + rest:
            for grid, tree in zip(batch.patch_grids, batch.cuts):
                np.testing.assert_array_equal(tree.masks, tiny_cutter(grid).masks)
        assert queue.cut_seconds > 0 and queue.wait_seconds > 0
    finally:
        release.set()
        queue.close()


def test_a_process_pool_cuts_like_the_inline_cutter():
    queue = CutQueue(tiny_cutter, workers=1, kind="process", max_pending=1)
    try:
        batches = [PendingBatch(patch_grids=grids(2, seed), payload={}) for seed in range(3)]
        ready = [b for batch in batches for b in queue.submit(batch)] + queue.drain()
    finally:
        queue.close()
    assert len(ready) == 3
    for batch in ready:
        for grid, tree in zip(batch.patch_grids, batch.cuts):
            expected = tiny_cutter(grid)
            np.testing.assert_array_equal(tree.masks, expected.masks)
            np.testing.assert_array_equal(tree.parent, expected.parent)


def test_bad_queue_settings_are_refused():
    with pytest.raises(ValueError, match="cut_pool"):
        CutQueue(tiny_cutter, workers=1, kind="fibre")
    with pytest.raises(ValueError, match="cut_queue"):
        CutQueue(tiny_cutter, workers=1, max_pending=0)


def test_cut_settings_are_checked_by_one_rule():
    from claid.engine.cut_pool import check_cut_settings

    check_cut_settings(None, "thread", 2, auto=True)  # the default worker count
    check_cut_settings(0, "process", 1, auto=False)
    with pytest.raises(ValueError, match=r"cut_workers must be an integer >= 0, got None"):
        check_cut_settings(None, "thread", 2, auto=False)  # a pool needs its count
    with pytest.raises(ValueError, match=r"cut_workers must be an integer >= 0 or null, got -1"):
        check_cut_settings(-1, "thread", 2, auto=True)
    with pytest.raises(ValueError, match="cut_pool must be one of"):
        check_cut_settings(1, "fibre", 2, auto=True)
    with pytest.raises(ValueError, match="cut_queue must be an integer >= 1"):
        check_cut_settings(1, "thread", 0, auto=True)
