"""Every rank's account of an extraction, gathered by global rank 0.

Each rank of an extraction runs its own predict loop (under ``ddp_spawn`` in a
process the caller never sees), so its timings and counts exist only there. Before
the store barrier, every rank writes them to ``<store>/ranks/r<rank>.json``
(:func:`write_rank_report`); after the barrier, rank 0 adds them to the store's
summary (:func:`gather_rank_reports`). Rank 0 clears the folder before an
extraction starts (:func:`clear_rank_reports`), so what it gathers is this run's:
no other rank can reach its report before rank 0 has joined the process group.

A report::

    {"rank", "world_size", "node_rank", "local_rank", "host", "pid",
     "images", "regions", "skipped",            this rank's share, this run
     "seconds",                                 its predict loop, wall clock
     "timings_seconds": {phase: seconds},       ExtractionModule.timings
     "token_sources": {"backbone": n, "cache": n}}
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

from claid.artifacts import atomic_write_json

__all__ = ["REPORTS_DIR", "clear_rank_reports", "write_rank_report", "read_rank_reports",
           "gather_rank_reports"]

#: Folder of the store that holds the rank reports of its last extraction.
REPORTS_DIR = "ranks"


def clear_rank_reports(store_dir: str | Path) -> None:
    """Remove the rank reports of an earlier extraction (before a new one starts)."""
    shutil.rmtree(Path(store_dir) / REPORTS_DIR, ignore_errors=True)


def write_rank_report(store_dir: str | Path, rank: int, report: dict) -> Path:
    """Write one rank's report atomically; returns its path."""
    folder = Path(store_dir) / REPORTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(folder / f"r{int(rank):05d}.json", {**report, "rank": int(rank)})


def read_rank_reports(store_dir: str | Path) -> list[dict]:
    """The rank reports in the store, ordered by rank (empty when there are none).

    Raises:
        ValueError: a report is not readable JSON (names the file).
    """
    folder = Path(store_dir) / REPORTS_DIR
    if not folder.is_dir():
        return []
    reports = []
    for path in sorted(folder.glob("r*.json")):
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a readable rank report ({err})") from None
    return sorted(reports, key=lambda r: r["rank"])


def _summed(dicts: list[dict]) -> dict:
    total: Counter = Counter()
    for values in dicts:
        total.update({key: float(v) for key, v in values.items()})
    return {key: round(v, 3) for key, v in sorted(total.items())}


def gather_rank_reports(store_dir: str | Path) -> dict | None:
    """Add the rank reports to the store's summary (manifest ``summary``); returns the
    new summary, or None when no rank reported (no predict loop ran this time).

    Adds ``ranks`` (the reports), ``timings_seconds`` (each phase summed over ranks:
    process-seconds), ``token_sources`` (summed) and ``ranks_reporting``; fills
    ``timings_rank0_seconds`` and ``token_sources_rank0`` from rank 0's report (the
    caller's own module never ran the loop under ``ddp_spawn``).

    Raises:
        ValueError: the ranks disagree on the world size, or one is missing (names them).
    """
    from claid.store import write_summary
    from claid.store.format import read_manifest

    reports = read_rank_reports(store_dir)
    if not reports:
        return None
    sizes = {int(r["world_size"]) for r in reports}
    if len(sizes) != 1:
        raise ValueError(f"{store_dir}: rank reports disagree on the world size: {sorted(sizes)}")
    (world_size,) = sizes
    missing = sorted(set(range(world_size)) - {int(r["rank"]) for r in reports})
    if missing:
        raise ValueError(f"{os.path.join(str(store_dir), REPORTS_DIR)}: ranks {missing} of "
                         f"{world_size} wrote no report, although every rank passed the barrier")
    summary = dict(read_manifest(str(store_dir)).get("summary") or {})
    summary["ranks"] = reports
    summary["ranks_reporting"] = len(reports)
    summary["timings_seconds"] = _summed([r.get("timings_seconds", {}) for r in reports])
    summary["token_sources"] = {k: int(v) for k, v in
                                _summed([r.get("token_sources", {}) for r in reports]).items()}
    summary["timings_rank0_seconds"] = {k: round(float(v), 3) for k, v in
                                        reports[0].get("timings_seconds", {}).items()}
    summary["token_sources_rank0"] = dict(reports[0].get("token_sources", {}))
    write_summary(str(store_dir), summary)
    return summary
