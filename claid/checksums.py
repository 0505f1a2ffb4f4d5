"""What a derived artifact records so that damage and mismatches are caught before use.

- **File records.** ``{"size": bytes, "sha256": hex}`` of a file (:func:`file_record`),
  kept by whatever commits the file: a store shard's ``shard.json`` (``"files"``), an
  index dir's ``search.json`` (``"files"``), a cached array's sidecar. Sizes are
  cheap and checked on every open; checksums are checked when a run is about to reuse
  the artifact and by ``python -m claid verify``.
- **Provenance.** A derived artifact records what it was built from (``built_from``,
  e.g. the region store's content hash): one whose record does not match what the run
  would build it from is rebuilt, with a warning, like a damaged one.

:func:`save_checked_npy` / :func:`load_checked_npy` apply both to one cached array
(``queries-<hash>.npy`` + ``queries-<hash>.json``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from claid.artifacts import atomic_save_npy, atomic_write_json

log = logging.getLogger(__name__)

_CHUNK = 8 << 20  # bytes read at a time while hashing


def sha256_bytes(payload: bytes) -> str:
    """Hex sha256 of bytes already in memory."""
    return hashlib.sha256(payload).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 8 MB chunks (memory does not grow with the file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bytes_record(payload: bytes) -> dict:
    """``{"size", "sha256"}`` of a payload about to be written."""
    return {"size": len(payload), "sha256": sha256_bytes(payload)}


def file_record(path: str | os.PathLike) -> dict:
    """``{"size", "sha256"}`` of a file on disk."""
    return {"size": os.path.getsize(path), "sha256": file_sha256(path)}


def folder_records(folder: str | os.PathLike, *, exclude: tuple[str, ...] = ()) -> dict:
    """``{name: file_record}`` of every plain file directly in ``folder``, hidden
    temporaries and ``exclude`` left out."""
    folder = Path(folder)
    return {entry.name: file_record(entry) for entry in sorted(folder.iterdir())
            if entry.is_file() and not entry.name.startswith(".") and entry.name not in exclude}


def record_problems(folder: str | os.PathLike, records: dict, *, checksums: bool) -> list[str]:
    """What is wrong with the files of ``folder`` against their ``records``: missing,
    another size, or (``checksums``) other content. Empty when all match."""
    problems = []
    if not isinstance(records, dict):
        return [f"file records are {type(records).__name__}, not a mapping"]
    for name, record in sorted(records.items()):
        path = os.path.join(os.fspath(folder), name)
        if not isinstance(record, dict) or "size" not in record or "sha256" not in record:
            problems.append(f"{name}: malformed record {record!r:.80}")
        elif not os.path.isfile(path):
            problems.append(f"{name}: missing")
        elif os.path.getsize(path) != record["size"]:
            problems.append(f"{name}: {os.path.getsize(path)} bytes, {record['size']} recorded")
        elif checksums and file_sha256(path) != record["sha256"]:
            problems.append(f"{name}: content differs from its recorded sha256 (altered after it was written)")
    return problems


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def save_checked_npy(path: str | os.PathLike, array: np.ndarray, *, built_from: dict) -> Path:
    """Save ``array`` (atomically, never pickled) and, beside it, ``<stem>.json`` with
    its file record and what it was built from (written last: an array without a
    matching sidecar is not trusted)."""
    path = Path(path)
    atomic_save_npy(path, array)
    atomic_write_json(_sidecar(path), {"file": file_record(path), "built_from": built_from})
    return path


def load_checked_npy(path: str | os.PathLike, *, built_from: dict) -> np.ndarray | None:
    """The array saved by :func:`save_checked_npy` when its file matches its record
    (size and sha256) and it was built from ``built_from``; None (with a warning
    saying why, so the caller rebuilds it) when it is absent, damaged or mismatched."""
    path = Path(path)
    if not path.exists():
        return None
    reason = None
    try:
        sidecar = json.loads(_sidecar(path).read_text(encoding="utf-8"))
        if sidecar.get("built_from") != json.loads(json.dumps(built_from)):
            reason = "it was built from other inputs than this run's"
        elif problems := record_problems(path.parent, {path.name: sidecar.get("file")}, checksums=True):
            reason = "; ".join(problems)
        else:
            return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        reason = f"{_sidecar(path).name} (its checksum record) is missing"
    except (ValueError, OSError, AttributeError, RecursionError, TypeError) as err:
        reason = f"unreadable ({err})"
    warnings.warn(f"rebuilding {path}: {reason}", stacklevel=2)
    log.warning("rebuilding %s: %s", path, reason)
    return None
