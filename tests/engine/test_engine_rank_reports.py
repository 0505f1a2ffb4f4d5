"""claid.engine.rank_reports: every rank's timings and counts reach rank 0's summary."""

from __future__ import annotations

import pytest

from claid.engine.rank_reports import (
    clear_rank_reports,
    gather_rank_reports,
    read_rank_reports,
    write_rank_report,
)
from claid.store import RegionStore, ensure_store, write_summary


def _report(world_size, images, timings):
    return {"world_size": world_size, "node_rank": 0, "local_rank": 0, "host": "h", "pid": 1,
            "images": images, "regions": 2 * images, "skipped": 0, "seconds": 1.0,
            "timings_seconds": timings, "token_sources": {"backbone": images, "cache": 0}}


@pytest.fixture
def store_dir(tmp_path):
    path = str(tmp_path / "regions-x")
    ensure_store(path, config={"k": 1}, dim=4, dtype="float32")
    write_summary(path, {"images": 5, "timings_rank0_seconds": {}})  # what ddp_spawn's caller saw
    return path


def test_rank_zero_gathers_every_ranks_timings_into_the_summary(store_dir):
    write_rank_report(store_dir, 1, _report(2, 2, {"cut": 0.5, "forward": 1.0}))
    write_rank_report(store_dir, 0, _report(2, 3, {"cut": 0.25, "forward": 2.0}))
    summary = gather_rank_reports(store_dir)

    assert [r["rank"] for r in summary["ranks"]] == [0, 1]
    assert summary["timings_seconds"] == {"cut": 0.75, "forward": 3.0}
    assert summary["timings_rank0_seconds"] == {"cut": 0.25, "forward": 2.0}
    assert summary["token_sources"] == {"backbone": 5, "cache": 0}
    assert summary["token_sources_rank0"] == {"backbone": 3, "cache": 0}
    assert summary["images"] == 5  # the rest of the summary is kept
    assert RegionStore.open(store_dir).summary == summary  # written into the manifest


def test_a_rank_without_a_report_is_named(store_dir):
    write_rank_report(store_dir, 0, _report(3, 3, {}))
    write_rank_report(store_dir, 2, _report(3, 3, {}))
    with pytest.raises(ValueError, match=r"ranks \[1\] of 3"):
        gather_rank_reports(store_dir)


def test_reports_of_an_earlier_extraction_are_cleared(store_dir):
    write_rank_report(store_dir, 0, _report(1, 1, {}))
    clear_rank_reports(store_dir)
    assert read_rank_reports(store_dir) == []
    assert gather_rank_reports(store_dir) is None  # no predict loop ran: summary untouched
    assert RegionStore.open(store_dir).summary["timings_rank0_seconds"] == {}
