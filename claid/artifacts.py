"""What every stage's artifact shares: its key, how it is written, its schema version.

- **Keys.** An artifact is named by a readable prefix and :func:`config_hash` of its
  own and its upstream configuration (``regions-<hash>``, ``index-<hash>``...), so a
  sweep reuses whatever an earlier run computed with the same settings.
  :func:`database_key` and :func:`dataset_key` are the parts of a key that name a
  benchmark's images (and queries).
- **One durability rule.** Every file is written to a temporary name in the same
  folder (:func:`temp_path`: ``.<name>.tmp-<pid>-<random>``, so two processes never
  share one), flushed and fsynced, then renamed over the final name with
  ``os.replace``, and the folder is fsynced: a reader sees the old file or the new
  one, never half of one, also after a crash or kill -9. Folders are committed the
  same way (:func:`commit_dir`).
- **Schema versions.** :data:`SCHEMA_VERSIONS` holds one version per artifact kind;
  a reader refuses a version it does not know.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: The on-disk format version of each kind of artifact. Bump one when its layout changes.
SCHEMA_VERSIONS: dict[str, int] = {
    "region_store": 1,  # regions-<hash>/ (claid/store/)
    "index": 1,  # index-<hash>/index.json (claid/index/region_index.py)
    "search_table": 1,  # index-<hash>/search.json + regions.npz (claid/index/search_table.py)
    "report": 1,  # <run dir>/metrics.json and rankings.json (claid/evaluation/run_report.py)
    "scores": 1,  # scores JSON (claid/evaluation/report.py)
    "feature_cache": 1,  # tokens-<hash>/, featuremaps-<hash>/ (claid/engine/feature_cache.py)
}


def schema_version(kind: str) -> int:
    """The schema version this claid writes and reads for artifact ``kind``."""
    return SCHEMA_VERSIONS[kind]


# ----------------------------------------------------------------------------- keys
def config_hash(cfg: dict, length: int = 12) -> str:
    """Stable short hex hash of a JSON-able dict (key order does not matter).

    Args:
        cfg: the resolved config (nested dicts, lists, str, numbers, bool, None).
        length: number of hex characters kept (of sha256).
    Raises:
        ValueError: ``cfg`` holds something JSON cannot represent.
    """
    try:
        text = json.dumps(cfg, sort_keys=True, separators=(",", ":"), allow_nan=True)
    except TypeError as err:
        raise ValueError(f"config_hash needs a JSON-able dict: {err}") from err
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def plain(cfg: Any) -> dict:
    """A config node (OmegaConf ``DictConfig`` or mapping) as a plain, resolved dict;
    None gives ``{}``."""
    if cfg is None:
        return {}
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def database_key(bench) -> dict:
    """What identifies the database images of a benchmark: the key of every artifact
    computed from them alone (regions, whole-image vectors, cached tokens), so that
    another query split of the same collection (INSTRE-M, synthetic ``split``, ILIAS
    text vs image queries) reuses them."""
    images = "\n".join(bench.database).encode()
    return {
        "name": bench.name,
        "root": str(Path(bench.root).resolve()),
        "images": hashlib.sha1(images).hexdigest()[:16],
    }


def dataset_key(bench) -> dict:
    """What identifies the images and the queries of a benchmark (query artifacts)."""
    queries = json.dumps(
        [[q.qid, q.image, q.box, q.text] for q in bench.queries], default=json_default
    ).encode()
    return {**database_key(bench), "queries": hashlib.sha1(queries).hexdigest()[:16]}


# ----------------------------------------------------------------------------- writing
def temp_path(path: str | os.PathLike) -> Path:
    """The temporary name a file or folder is written under before it is renamed
    to ``path``: hidden, in the same folder (so the rename is atomic), and unique
    to this process and call."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or creation inside folder ``path`` durable (a no-op where the
    filesystem refuses to fsync a folder; the rename itself is still atomic)."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_synced(path: str | os.PathLike, payload: bytes) -> None:
    """Write ``payload`` to ``path`` and fsync it, in place (for files inside a
    folder that is itself committed atomically, e.g. a store shard)."""
    with open(path, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file that a library wrote (e.g. ``faiss.write_index``) to the disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Replace ``path`` with ``payload`` atomically and durably (the module's rule).

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        write_synced(tmp, payload)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and arrays and paths."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_bytes(obj: Any) -> bytes:
    """``obj`` as indented, key-sorted UTF-8 JSON (numpy values converted)."""
    return json.dumps(obj, indent=1, sort_keys=True, default=json_default).encode("utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Replace ``path`` with ``obj`` as JSON, atomically and durably."""
    return atomic_write_bytes(path, json_bytes(obj))


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` in the .npy format (never pickled)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """``np.save`` to ``path`` atomically and durably (no pickled objects)."""
    return atomic_write_bytes(path, npy_bytes(array))


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """``np.savez`` of ``arrays`` to ``path`` atomically and durably."""
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(a) for name, a in arrays.items()})
    return atomic_write_bytes(path, buffer.getvalue())


def commit_dir(tmp: str | os.PathLike, directory: str | os.PathLike) -> Path:
    """Move a fully written folder ``tmp`` (from :func:`temp_path`) to ``directory``
    in one rename, replacing an existing folder of that name: readers see the old
    folder or the new one. The files inside must already be synced."""
    tmp, directory = Path(tmp), Path(directory)
    fsync_dir(tmp)
    if directory.exists():
        old = temp_path(directory)
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, directory)
    fsync_dir(directory.parent)
    return directory
