"""An IVF index whose inverted lists live on disk, built in parts and merged.

    build_ondisk_index(table, parts=4, ...) -> RegionIndex   what ``index=ivfpq_ondisk``
                                                             builds (every part in turn)
    By several jobs, on one shared work dir (each step resumable):
    train_parts(table, work_dir, parts, **settings)   once: whitening, coarse quantizer,
                                                      codebooks, on a seeded sample
    build_part(table, work_dir, part)                 each job: its rows -> its part file
    merge_parts(work_dir) -> RegionIndex              once: parts -> one lists file

The work dir::

    trained/                    the trained, empty index (an index dir: index.faiss,
                                whitening.npz, index.json)
    plan.json                   rows, parts, settings, the trained files' records
    part-0001-of-0004.faiss     rows [lo, hi) of part 1, encoded (FAISS's own format)
    part-0001-of-0004.json      its record: rows, size + sha256, the training it used
    index.ivfdata               the merged lists (moved into the index dir by ``save``)

A part whose file matches its record is not redone; a part whose file is missing,
resized or altered (sha256) is rebuilt by ``build_part`` and refused by
``merge_parts``. The searchable index is the trained index with its lists replaced
by FAISS's ``OnDiskInvertedLists`` over ``index.ivfdata``; ``load_index`` maps that
file read-only from the index dir (anonymous memory: the quantizer and codebooks).

FAISS does the training, the encoding (``add_with_ids``, ids = table rows), the part
files, mapping them (``IO_FLAG_MMAP``) and merging them on disk
(:func:`faiss.contrib.ondisk.merge_ondisk`), and the mapped search. FAISS does not
split the rows into parts, know a part is done or damaged, tie the parts to one
training, whiten, or find the lists file after its folder is moved: claid does.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path

import faiss
import numpy as np
from faiss.contrib.ondisk import merge_ondisk

from claid.artifacts import (
    DamagedArtifactError,
    atomic_write_json,
    disk_full_guard,
    file_lock,
    fsync_file,
    temp_path,
)
from claid.checksums import file_record, folder_records, record_problems
from claid.index.chunked_build import build_from_table, train_from_table
from claid.index.index_dir import LISTS_FILE, load_index
from claid.index.region_index import RegionIndex

log = logging.getLogger(__name__)

TRAINED_DIR, PLAN_FILE = "trained", "plan.json"


class ArrayTable:
    """An in-memory (N, D) array with the reading side of a
    :class:`~claid.index.search_table.RegionTable` (``n_rows``, ``dim``, ``gather``,
    ``vector_chunks``), for building from arrays."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.array = np.asarray(vectors)
        if self.array.ndim != 2:
            raise ValueError(f"region vectors must be (N, D), got shape {self.array.shape}")
        self.n_rows, self.dim = int(self.array.shape[0]), int(self.array.shape[1])
        self.stored_dtype = self.array.dtype

    def gather(self, rows: np.ndarray, dtype=np.float32) -> np.ndarray:
        return np.asarray(self.array[np.asarray(rows, dtype=np.int64)], dtype=dtype)

    def vector_chunks(self, rows: int = 65536):
        for start in range(0, self.n_rows, rows):
            yield start, np.asarray(self.array[start : start + rows], dtype=np.float32)


def part_rows(n_rows: int, parts: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` of each part: consecutive, sizes differing by at most one."""
    if int(parts) < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    bounds = [int(n_rows) * i // int(parts) for i in range(int(parts) + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def part_name(part: int, parts: int) -> str:
    return f"part-{part:04d}-of-{parts:04d}"


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def read_plan(work_dir: str | os.PathLike) -> dict:
    """The work dir's plan, its trained index checked against the plan's records.

    Raises:
        DamagedArtifactError: no plan (train first) or a trained index that changed.
    """
    work_dir = Path(work_dir)
    plan = _read_json(work_dir / PLAN_FILE)
    if plan is None:
        raise DamagedArtifactError(f"{work_dir / PLAN_FILE}: missing or unreadable; "
                                   "train the index first (train_parts)")
    problems = record_problems(work_dir / TRAINED_DIR, plan.get("trained", {}), checksums=True)
    if problems:
        raise DamagedArtifactError(f"{work_dir / TRAINED_DIR}: {'; '.join(problems)}; "
                                   "train again (train_parts)")
    return plan


def train_parts(table, work_dir: str | os.PathLike, parts: int, *, source=None,
                **settings) -> dict:
    """Train once (whitening, quantizer, codebooks on ``settings["train_size"]``
    seeded rows) and write the plan the parts follow; an existing training for the
    same rows, parts, settings and ``source`` is reused.

    Args:
        table: the rows to index (``n_rows``, ``dim``, ``gather``).
        work_dir: the folder the parts are written to (shared by every job).
        parts: how many parts the rows are split into.
        source: JSON facts identifying the rows (e.g. the store's content hash).
        **settings: the keyword arguments of ``RegionIndex.train``.
    Returns:
        the plan (``plan.json``).
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    wanted = json.loads(json.dumps({"n_rows": table.n_rows, "dim": table.dim, "parts": int(parts),
                                    "settings": settings, "source": source}))
    part_rows(table.n_rows, parts)  # checks parts
    with file_lock(work_dir / ".train.lock", what="training the on-disk index"):
        plan = _read_json(work_dir / PLAN_FILE)
        if plan is not None and {k: plan.get(k) for k in wanted} == wanted:
            try:
                return read_plan(work_dir)
            except DamagedArtifactError as err:
                log.warning("%s", err)
        for stale in work_dir.glob("part-*"):  # parts of another plan
            stale.unlink()
        started = time.perf_counter()
        index = train_from_table(table, **settings)
        index.save(work_dir / TRAINED_DIR, provenance={"plan": wanted}, overwrite=True)
        plan = {**wanted, "trained": folder_records(work_dir / TRAINED_DIR),
                "is_ivf": faiss.try_extract_index_ivf(index.faiss_index) is not None,
                "train_seconds": round(time.perf_counter() - started, 3)}
        atomic_write_json(work_dir / PLAN_FILE, plan)
    return plan


def part_problems(work_dir: str | os.PathLike, part: int, plan: dict) -> list[str]:
    """What is wrong with part ``part`` of ``plan``: no record, a record of another
    training or rows, or a file missing, resized or altered. Empty when it is done."""
    work_dir = Path(work_dir)
    name = part_name(part, plan["parts"])
    record = _read_json(work_dir / f"{name}.json")
    if record is None:
        return [f"{name}: not built"]
    expected = {"rows": list(part_rows(plan["n_rows"], plan["parts"])[part]),
                "trained": plan["trained"]["index.faiss"]["sha256"]}
    if {k: record.get(k) for k in expected} != expected:
        return [f"{name}: built for other rows or another training"]
    return record_problems(work_dir, {f"{name}.faiss": record.get("file")}, checksums=True)


def build_part(table, work_dir: str | os.PathLike, part: int, *,
               add_block: int = 65536) -> dict:
    """Encode part ``part``'s rows into its own file (ids = table rows), unless a
    file matching its record is there already. Memory: the part's codes and ids
    plus one block. Returns the part's record (``"reused": True`` when kept)."""
    work_dir = Path(work_dir)
    plan = read_plan(work_dir)
    if not 0 <= int(part) < plan["parts"]:
        raise ValueError(f"part must be in [0, {plan['parts']}), got {part}")
    if table.n_rows != plan["n_rows"] or table.dim != plan["dim"]:
        raise ValueError(f"the table has {table.n_rows} x {table.dim} rows, the plan "
                         f"{plan['n_rows']} x {plan['dim']}")
    name = part_name(part, plan["parts"])
    problems = part_problems(work_dir, part, plan)
    if not problems:
        log.info("part %s already built, kept", name)
        return {**_read_json(work_dir / f"{name}.json"), "reused": True}
    if problems != [f"{name}: not built"]:
        log.warning("rebuilding %s", "; ".join(problems))
    started = time.perf_counter()
    index = load_index(work_dir / TRAINED_DIR, index_class=RegionIndex)
    lo, hi = part_rows(plan["n_rows"], plan["parts"])[part]
    for start in range(lo, hi, max(1, int(add_block))):
        rows = np.arange(start, min(start + int(add_block), hi), dtype=np.int64)
        index.faiss_index.add_with_ids(index.transform(table.gather(rows)), rows)
    path, tmp = work_dir / f"{name}.faiss", temp_path(work_dir / f"{name}.faiss")
    try:
        with disk_full_guard(path):
            faiss.write_index(index.faiss_index, str(tmp))
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    record = {"part": int(part), "parts": plan["parts"], "rows": [lo, hi],
              "trained": plan["trained"]["index.faiss"]["sha256"], "file": file_record(path),
              "seconds": round(time.perf_counter() - started, 3)}
    atomic_write_json(work_dir / f"{name}.json", record)
    return record


def merge_parts(work_dir: str | os.PathLike) -> RegionIndex:
    """The trained index with every part's lists merged on disk into
    ``index.ivfdata`` (``pending_lists``: ``save`` moves it into the index dir).

    Raises:
        DamagedArtifactError: a part not built, or damaged (named, with its problem).
    """
    work_dir = Path(work_dir)
    plan = read_plan(work_dir)
    problems = [p for part in range(plan["parts"]) for p in part_problems(work_dir, part, plan)]
    if problems:
        raise DamagedArtifactError(f"{work_dir}: {'; '.join(problems)}; build those parts "
                                   "again (build_part)")
    started = time.perf_counter()
    index = load_index(work_dir / TRAINED_DIR, index_class=RegionIndex)
    lists_path = work_dir / LISTS_FILE
    lists_path.unlink(missing_ok=True)  # of a merge killed part way
    files = [str(work_dir / f"{part_name(part, plan['parts'])}.faiss") for part in range(plan["parts"])]
    with disk_full_guard(lists_path):
        merge_ondisk(index.faiss_index, files, str(lists_path))
    if index.ntotal != plan["n_rows"]:
        raise RuntimeError(f"the merged index holds {index.ntotal} rows, the plan {plan['n_rows']}")
    fsync_file(lists_path)
    index.pending_lists, index.mapped = lists_path, True
    index.meta.update(lists="ondisk", parts=plan["parts"],
                      merge_seconds=round(time.perf_counter() - started, 3))
    return index


def _work_dir_for(flat_file) -> Path:
    """A stable work dir beside the index stage's temporary file name
    (``.index-<hash>.faiss.tmp-<pid>-...`` -> ``index-<hash>.parts``), so a run
    killed part way finds its finished parts; a temporary folder without one."""
    if flat_file is None:
        return Path(tempfile.mkdtemp(prefix="claid-ondisk-"))
    flat_file = Path(flat_file)
    stem = flat_file.name.lstrip(".").split(".faiss", 1)[0]
    return flat_file.parent / f"{stem}.parts"


def build_ondisk_index(vectors, *, parts: int = 4, work_dir: str | os.PathLike | None = None,
                       keep_parts: bool = False, add_block: int = 65536,
                       flat_file: str | os.PathLike | None = None, **settings) -> RegionIndex:
    """What ``conf/index/ivfpq_ondisk.yaml`` builds: train once, encode ``parts``
    parts in turn (each resumable), merge them into on-disk lists.

    Args:
        vectors: a RegionTable (rows streamed from the store) or an (N, D) array.
        parts: parts the rows are split into (the memory of one part's codes at a time).
        work_dir: where the parts are written; None: beside the index stage's file
            (``flat_file``), else a temporary folder.
        keep_parts: keep the part files after the merge (they hold the index again).
        add_block: rows read and encoded at a time.
        flat_file: from the index stage (not a setting): a flat fallback's file.
        **settings: the keyword arguments of ``RegionIndex.train``.
    Returns:
        the RegionIndex; an index that cannot be IVF-trained (too few rows: the
        preset's ``fallback``) is built in memory as usual.
    """
    table = vectors if hasattr(vectors, "gather") else ArrayTable(vectors)
    work = Path(work_dir) if work_dir is not None else _work_dir_for(flat_file)
    throwaway = work_dir is None and flat_file is None  # a temporary folder of ours
    started = time.perf_counter()
    plan = train_parts(table, work, parts, **settings)
    if not plan["is_ivf"] or table.n_rows == 0:
        log.info("no IVF index to put on disk (%s rows): built in memory", table.n_rows)
        shutil.rmtree(work, ignore_errors=True)  # its training only
        return (build_from_table(table, add_block=add_block, flat_file=flat_file, **settings)
                if hasattr(vectors, "gather") else RegionIndex.build(vectors, **settings))
    seconds = [build_part(table, work, part, add_block=add_block)["seconds"] for part in range(parts)]
    index = merge_parts(work)
    index.meta.update(part_seconds=seconds, build_seconds=round(time.perf_counter() - started, 3))
    if not keep_parts:
        for stale in work.glob("part-*"):
            stale.unlink()
    if throwaway:  # e.g. the global baseline's index, never saved: its folder goes with it
        weakref.finalize(index, shutil.rmtree, str(work), True)
    return index


def _signature() -> inspect.Signature:
    own = [p for name, p in inspect.signature(build_ondisk_index).parameters.items()
           if name != "settings"]
    train = list(inspect.signature(RegionIndex.train).parameters.values())[1:]
    return inspect.Signature(own + train, return_annotation=RegionIndex)


build_ondisk_index.__signature__ = _signature()
