"""An index dir on disk: the FAISS index, its whitening and what produced it.

    index.faiss     the FAISS index
    whitening.npz   the whitening (only when one is used)
    index.json      what produced it: factory, parameters, dims, store hash, versions
    index.ivfdata   the inverted lists of an on-disk IVF index (``index.json``:
                    ``"lists": "ondisk"``), searched memory-mapped

Written as a whole (a temporary folder committed with one rename, see
:mod:`claid.artifacts`); the search table (:mod:`claid.index.search_table`) is
written beside it afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import faiss

from claid.artifacts import (
    commit_dir,
    disk_full_guard,
    fsync_file,
    move_into,
    schema_version,
    temp_path,
    write_synced,
)
from claid.index.whitening import load_whitening, save_whitening

if TYPE_CHECKING:  # the class is passed in: RegionIndex.save / load call this module
    from claid.index.region_index import RegionIndex

SCHEMA_VERSION = schema_version("index")

INDEX_FILE, WHITENING_FILE, META_FILE = "index.faiss", "whitening.npz", "index.json"
LISTS_FILE = "index.ivfdata"


def save_index(
    index: RegionIndex,
    directory: str | os.PathLike,
    *,
    provenance: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the index folder atomically (built in a temp folder, committed with
    :func:`claid.artifacts.commit_dir`).

    Args:
        directory: the folder to create (e.g. beside the region store).
        provenance: extra JSON-serialisable facts to record (config, store path...).
        overwrite: replace an existing folder; otherwise an existing one is an error.
    Returns:
        the folder path.
    """
    directory = Path(directory)
    if directory.exists() and not overwrite:
        raise FileExistsError(f"{directory} exists; pass overwrite=True to replace it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(directory)
    tmp.mkdir()
    try:
        if index.pending_lists is not None:  # an on-disk IVF index's lists, synced
            _move_lists(index, tmp)
        if index.pending_file is not None:  # written by a streamed flat build, synced
            move_into(index.pending_file, tmp / INDEX_FILE)
            index.pending_file = None
        else:
            with disk_full_guard(directory / INDEX_FILE):  # faiss reports ENOSPC as RuntimeError
                faiss.write_index(index.faiss_index, str(tmp / INDEX_FILE))
            fsync_file(tmp / INDEX_FILE)
        if index.whitening is not None:
            save_whitening(tmp / WHITENING_FILE, index.whitening)
        record = {**index.describe(), "provenance": provenance or {}}
        write_synced(tmp / META_FILE, json.dumps(record, indent=2, sort_keys=True).encode())
        commit_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_index(directory: str | os.PathLike, *, index_class: type[RegionIndex], mmap: bool = False) -> RegionIndex:
    """Read an index folder written by :func:`save_index`.

    With ``mmap`` the vectors of a flat (exact) index are memory-mapped from
    ``index.faiss`` instead of read into memory (FAISS ``IO_FLAG_MMAP_IFC``): a search
    reads them through the page cache, which the kernel can drop, so a 4 GiB flat
    index costs no anonymous memory. Such an index is read-only (no ``add``). Other
    index types are read as usual.

    Raises:
        FileNotFoundError: when the folder or one of its files is missing.
        ValueError: on an unknown schema version or a record that does not match
            the stored index.
    """
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"no {META_FILE} in {directory}: not a claid index folder (build one with "
            "claid.index.build_index(...).save(folder))"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ValueError(f"{meta_path}: not usable JSON ({str(err)[:120]}); rebuild the index") from None
    wrong = _meta_problem(meta)
    if wrong:
        raise ValueError(f"{meta_path}: {wrong}; rebuild the index")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{directory} has index schema {meta.get('schema_version')}, this claid reads "
            f"{SCHEMA_VERSION}; rebuild the index"
        )
    ondisk = meta.get("lists") == "ondisk"
    flags = (faiss.IO_FLAG_MMAP_IFC if mmap else 0) | (faiss.IO_FLAG_SKIP_IVF_DATA if ondisk else 0)
    faiss_index = faiss.read_index(str(directory / INDEX_FILE), flags)
    if ondisk:
        _map_lists(faiss_index, directory / LISTS_FILE)
    elif _ondisk_lists(faiss_index) is not None:  # lists in a file the index names itself
        raise ValueError(f"{directory}: {INDEX_FILE} has on-disk lists, {META_FILE} does not say so")
    whitening = None
    if (directory / WHITENING_FILE).is_file():
        whitening = load_whitening(directory / WHITENING_FILE)
    if (whitening is None) != ("dim" not in meta["whitening"]):
        raise ValueError(f"{directory}: whitening file and {META_FILE} disagree")
    if faiss_index.ntotal != meta["ntotal"] or faiss_index.d != meta["dim"]:
        raise ValueError(
            f"{directory}: {INDEX_FILE} holds {faiss_index.ntotal} x {faiss_index.d}, "
            f"{META_FILE} says {meta['ntotal']} x {meta['dim']}"
        )
    for key in ("ntotal", "claid_version", "faiss_version", "provenance"):
        meta.pop(key, None)
    index = index_class(faiss_index, whitening, meta)  # RegionIndex.load passes its class
    index.mapped = (mmap and index.is_exact) or ondisk
    index.set_search_params(
        **{name: meta["params"].get(name) for name in ("nprobe", "ef_search", "refine_factor")}
    )
    return index


def _meta_problem(meta) -> str | None:
    """What is wrong with the fields of an index.json that loading reads (None: usable)."""
    if not isinstance(meta, dict):
        return "not a JSON object"
    for name in ("ntotal", "dim"):
        value = meta.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"'{name}' must be an integer >= 0, got {value!r:.40}"
    for name in ("whitening", "params"):
        if not isinstance(meta.get(name), dict):
            return f"'{name}' must be an object"
    return None


def _ondisk_lists(faiss_index: faiss.Index):
    """The ``OnDiskInvertedLists`` of an IVF index, or None."""
    ivf = faiss.try_extract_index_ivf(faiss_index)
    lists = faiss.downcast_InvertedLists(ivf.invlists) if ivf is not None else None
    return lists if isinstance(lists, faiss.OnDiskInvertedLists) else None


def _move_lists(index: RegionIndex, tmp: Path) -> None:
    """Move an on-disk index's lists file into the folder being built; the index
    file records its name only (the reader maps it from its own folder)."""
    lists = _ondisk_lists(index.faiss_index)
    if lists is None:
        raise ValueError("pending_lists is set but the index has no on-disk inverted lists")
    move_into(index.pending_lists, tmp / LISTS_FILE)  # the mapping follows the file
    index.pending_lists = None
    lists.filename = LISTS_FILE


def _map_lists(faiss_index: faiss.Index, path: Path) -> None:
    """Map an on-disk index's lists from ``path`` (FAISS recorded the name it was
    written under; ``IO_FLAG_ONDISK_SAME_DIR`` would print to stdout), read-only,
    after checking that the file holds every list FAISS expects."""
    lists = _ondisk_lists(faiss_index)
    if lists is None:
        raise ValueError(f"{path.parent}: {META_FILE} says on-disk lists, {INDEX_FILE} has none")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (the inverted lists of an on-disk index)")
    if os.path.getsize(path) < lists.totsize:
        raise ValueError(f"{path}: {os.path.getsize(path)} bytes, the index needs {lists.totsize}")
    lists.filename, lists.read_only = str(path), True
    lists.do_mmap()
