"""The re-ranking artifacts under ``paths.cache_dir``, keyed by content and settings.

    index-dba-<hash>/    a full index dir (index.faiss, search table, ...) holding the
                         DBA vectors; key {"source": <source index key>, "dba": settings}
    diffusion-<hash>/    offline_{indptr,indices,data}.npy + diffusion.json; key
                         {"source": <key of the index it diffuses>, "diffusion": settings}

The source index's key (its search.json ``key``) already holds the store's content
hash and the index settings, so both are keyed by the store, the index and their
own settings. A dir is reused only when its key matches and its files have their
recorded sizes and SHA-256 (a file the records do not list is never read, and
records that list nothing are a damaged record); loaded arrays are checked (shapes, ranges, finite)
before use; anything else is rebuilt with a warning. Writes go to a temporary
folder committed in one rename (:func:`claid.artifacts.commit_dir`).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
from scipy import sparse

from claid.artifacts import (
    atomic_save_npy,
    atomic_write_json,
    commit_dir,
    config_hash,
    fsync_file,
    temp_path,
)
from claid.checksums import folder_records, record_problems

log = logging.getLogger(__name__)

DBA_VECTORS = "dba_vectors.npy"
DIFFUSION_META = "diffusion.json"
OFFLINE_FILES = ("indptr", "indices", "data")


def dba_key(source_key: dict, settings: dict) -> dict:
    return {"source": source_key, "dba": {k: v for k, v in settings.items() if k != "block_rows"}}


def dba_dir(cache_dir: Path, key: dict) -> Path:
    return Path(cache_dir) / f"index-dba-{config_hash(key)}"


def diffusion_key(source_key: dict, settings: dict) -> dict:
    offline = ("kd", "truncation", "gamma", "alpha", "tol", "max_iter", "same_image")
    # kd counts the region itself, as fyang93/diffusion does: an offline part cached when kd
    # counted other regions only is another graph, hence the marker in the key
    return {"source": source_key, "diffusion": {k: settings[k] for k in offline}, "kd_counts_self": True}


def diffusion_dir(cache_dir: Path, key: dict) -> Path:
    return Path(cache_dir) / f"diffusion-{config_hash(key)}"


def load_dba(directory: Path, key: dict):
    """(RegionIndex, its whitened database vectors or None) from a DBA index dir, or
    None when it is absent or unusable (warned)."""
    from claid.index.index_stage import _reusable_index
    from claid.index.search_table import read_search_meta

    if not (directory / "search.json").exists():
        return None
    index = _reusable_index(directory, key)  # the recorded files' checksums, the key
    if index is None:
        return None
    records = read_search_meta(directory).get("files") or {}
    vectors = None
    if DBA_VECTORS in records:
        try:  # recorded and checksummed just now; still checked as any stranger's array
            vectors = np.load(directory / DBA_VECTORS, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:  # e.g. a pickle where an array belongs
            return _warn(directory, f"{DBA_VECTORS} is not a plain array ({str(err)[:160]})")
        if vectors.shape != (index.ntotal, index.dim) or vectors.dtype != np.float32:
            return _warn(directory, f"{DBA_VECTORS} is {vectors.dtype} {vectors.shape}")
    elif (directory / DBA_VECTORS).exists():  # not written by the cache: never read
        return _warn(directory, f"{DBA_VECTORS} is not recorded in its search.json")
    return index, vectors


def save_dba(directory: Path, index, vectors: np.ndarray, table, descriptor: dict, key: dict) -> None:
    """Write the DBA index dir; the whitened DBA vectors are kept beside a compressed
    index (its codes cannot give them back), not beside a flat one (it is them)."""
    from claid.index.search_table import save_search_table

    index.save(directory, provenance={"key": key}, overwrite=True)
    if not index.is_exact:
        atomic_save_npy(directory / DBA_VECTORS, np.ascontiguousarray(vectors, np.float32))
    save_search_table(directory, table, descriptor=descriptor, key=key)  # written last


def load_offline(directory: Path, key: dict, n: int) -> sparse.csr_matrix | None:
    """The cached offline matrix (n, n), or None when absent or unusable (warned)."""
    meta_path = directory / DIFFUSION_META
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        return _warn(directory, f"{DIFFUSION_META} is not valid JSON ({str(err)[:160]})")
    if not isinstance(meta, dict) or meta.get("key") != json.loads(json.dumps(key)):
        return _warn(directory, "built from other inputs or settings")
    records = meta.get("files")
    wanted = {f"offline_{name}.npy" for name in OFFLINE_FILES}
    if not isinstance(records, dict) or set(records) != wanted:  # an emptied record checks nothing
        listed = sorted(records) if isinstance(records, dict) else type(records).__name__
        return _warn(directory, f"{DIFFUSION_META} records {listed}, not the offline files {sorted(wanted)}")
    problems = record_problems(directory, records, checksums=True)
    if problems:
        return _warn(directory, "; ".join(problems))
    try:
        indptr, indices, data = (np.load(directory / f"offline_{name}.npy", allow_pickle=False)
                                 for name in OFFLINE_FILES)
    except (OSError, ValueError) as err:
        return _warn(directory, str(err))
    if (indptr.shape != (n + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0)
            or indptr[-1] != indices.size or indices.shape != data.shape
            or (indices.size and (indices.min() < 0 or indices.max() >= n))
            or not np.all(np.isfinite(data))):
        return _warn(directory, f"offline arrays do not describe a {n} x {n} matrix")
    return sparse.csr_matrix((data.astype(np.float32), indices, indptr), shape=(n, n))


def save_offline(directory: Path, offline: sparse.csr_matrix, key: dict, info: dict) -> None:
    tmp = temp_path(directory)
    tmp.mkdir(parents=True)
    for name in OFFLINE_FILES:
        path = tmp / f"offline_{name}.npy"
        np.save(path, getattr(offline, name), allow_pickle=False)  # streamed, not buffered
        fsync_file(path)
    atomic_write_json(tmp / DIFFUSION_META, {"key": key, "info": info, "shape": list(offline.shape),
                                             "files": folder_records(tmp, exclude=(DIFFUSION_META,))})
    commit_dir(tmp, directory)


def _warn(directory: Path, problem: str):
    message = f"rebuilding {directory}: {problem}"
    warnings.warn(message, stacklevel=3)
    log.warning(message)
    return None
