"""Checking a region store's committed shards: :func:`verify_store` (what
``python -m claid verify`` reports), :func:`drop_damaged_shards` (what a run does
before it reuses a store) and :func:`store_content_hash` (what derived artifacts
are keyed by: the store's content, not its folder name)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from claid.artifacts import fsync_dir
from claid.checksums import file_record
from claid.store.format import open_shard, read_manifest, shard_size_problems
from claid.store.shard_info import region_problems

log = logging.getLogger(__name__)

DAMAGED_DIR = "damaged"  # <store>/damaged/<shard>: moved out of shards/, never read


@dataclass
class StoreCheck:
    """The result of checking a store: per damaged shard, what is wrong."""

    store_dir: str
    shards: int = 0
    files: int = 0
    images: int = 0
    unrecorded: list[str] = field(default_factory=list)  # shards older than file records
    damaged: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.damaged


def _shard_names(store_dir: str) -> list[str]:
    root = os.path.join(store_dir, "shards")
    if not os.path.isdir(root):
        return []
    return sorted(n for n in os.listdir(root)
                  if not n.startswith(".") and os.path.isdir(os.path.join(root, n)))


def _check_shard(path: str, name: str, manifest: dict, checksums: bool) -> tuple[dict | None, list[str]]:
    try:
        shard = open_shard(path, name, manifest)  # shard.json, headers, recorded sizes
    except (OSError, ValueError, KeyError, TypeError) as err:
        return None, [str(err).replace(f"corrupt shard {path}: ", "")]
    if not checksums:
        return shard.info, []
    problems = shard_size_problems(path, shard.info, checksums=True)
    if not problems:  # the files are as written: now their values
        try:
            problems = region_problems(path, shard.info, np.load(os.path.join(path, "regions.npy"),
                                                                 mmap_mode="r", allow_pickle=False))
        except (OSError, ValueError) as err:
            problems = [f"regions.npy: {str(err)[:200]}"]
    return shard.info, problems


def verify_store(store_dir: str, *, checksums: bool = True) -> StoreCheck:
    """Check every committed shard of the store in ``store_dir``: its shard.json,
    array headers and file sizes, and with ``checksums`` the sha256 of every file.

    Raises:
        ValueError: ``store_dir`` is not a region store (no or unreadable manifest).
    """
    store_dir = os.fspath(store_dir)
    manifest = read_manifest(store_dir)
    check = StoreCheck(store_dir)
    for name in _shard_names(store_dir):
        info, problems = _check_shard(os.path.join(store_dir, "shards", name), name,
                                      manifest, checksums)
        check.shards += 1
        if problems:
            check.damaged[name] = problems
            continue
        if info.get("files") is None:
            check.unrecorded.append(name)
        check.files += len(info.get("files") or {})
        check.images += len(info["images"])
    return check


def drop_damaged_shards(store_dir: str, *, checksums: bool = True) -> dict[str, list[str]]:
    """Move every damaged shard out of ``shards/`` (to ``damaged/``, kept for
    inspection, never read), with a warning, so that its images count as not done
    and are extracted again. Call it under the store's lock, before reusing a store.

    Returns:
        ``{shard name: problems}`` of the shards moved.
    """
    check = verify_store(store_dir, checksums=checksums)
    if not check.damaged:
        return {}
    target = os.path.join(os.fspath(store_dir), DAMAGED_DIR)
    os.makedirs(target, exist_ok=True)
    for name, problems in check.damaged.items():
        os.replace(os.path.join(store_dir, "shards", name), os.path.join(target, name))
        message = (f"region store {store_dir}: shard {name} is damaged ({'; '.join(problems)}); "
                   f"moved to {DAMAGED_DIR}/, its images will be extracted again")
        warnings.warn(message, stacklevel=2)
        log.warning(message)
    fsync_dir(os.path.join(store_dir, "shards"))
    fsync_dir(target)
    return check.damaged


def store_content_hash(store) -> str:
    """A hash of the content of an opened store's committed shards (their names,
    shard.json and every file's sha256, from the records in shard.json; computed from the files
    for shards written before records were kept): the key of what is derived from
    the store, so a changed store is never mistaken for the one an index was built
    from, and two folders with the same content share derived artifacts."""
    digest = hashlib.sha256()
    for shard in store._shards:
        records = shard.info.get("files")
        if records is None:
            records = {name: file_record(os.path.join(shard.path, name))
                       for name in sorted(os.listdir(shard.path)) if name != "shard.json"}
        # shard.json itself (image ids, sizes, skips) and every other file's record
        digest.update(json.dumps([shard.name, shard.info, records], sort_keys=True).encode())
    return digest.hexdigest()[:16]
