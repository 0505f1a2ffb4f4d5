"""Store maintenance: :func:`compact_store` (fewer, larger shards) and
:func:`find_token_store` (a store whose cached tokens can stand in for the backbone)."""

from __future__ import annotations

import json
import os
import shutil

from claid.artifacts import file_lock, fsync_dir
from claid.store.format import read_manifest
from claid.store.reader import RegionStore
from claid.store.writer import RegionStoreWriter


def compact_store(store_dir: str, *, shard_size: int = 4096) -> list[str]:
    """Rewrite a store's shards into fewer, larger ones (e.g. after many resumed runs).

    Duplicates are dropped physically, skip records kept. Crash-safe: the new shards
    are committed first (readers then see every image twice and keep the old copy,
    which is identical), and the old shards are removed only afterwards. It holds
    the store's lock (``<store>/.lock``), so it waits for a run extracting into the
    store, and a run waits for it; reopen readers afterwards (they map shard files
    lazily, and the old files are gone).

    Returns:
        The names of the new shards.
    """
    with file_lock(os.path.join(os.fspath(store_dir), ".lock"), what="compacting the store"):
        return _compact(store_dir, shard_size)


def _compact(store_dir: str, shard_size: int) -> list[str]:
    store = RegionStore.open(store_dir)
    old = [shard.path for shard in store._shards]
    # float32 if any image has float32 tokens: compaction must never lose precision
    token_dtypes = {store.token_dtype(image_id) for image_id in store.token_image_ids()}
    token_dtype = "float32" if "float32" in token_dtypes else "float16"
    writer = RegionStoreWriter(store_dir, config=store.config, dim=store.dim,
                               dtype=str(store.dtype), shard_size=shard_size,
                               token_dtype=token_dtype)
    for image_id in store.image_ids:
        image = store.image_index(image_id)
        cell = store._cells[image]
        patch_grid = store.patch_grid(image_id) if store._tokens[image][1] is not None else None
        writer.add(store.regions_of(image_id), cell=None if cell is None else tuple(cell),
                   patch_grid=patch_grid)
    for image_id, reason in store.skipped:
        writer.skip(image_id, reason)
    writer.flush()
    for path in old:
        shutil.rmtree(path)
    fsync_dir(os.path.join(os.fspath(store_dir), "shards"))
    return writer.committed_shards


# ---------------------------------------------------------------- token cache lookup


def _normalised(value):
    """JSON round trip, so tuples compare equal to the lists a manifest holds."""
    return json.loads(json.dumps(value, sort_keys=True))


def find_token_store(cache_dir: str, match: dict, *, image_ids=None,
                     exclude=()) -> RegionStore | None:
    """The region store in ``cache_dir`` whose cached PatchGrids can stand in for the
    backbone, or None.

    A candidate is a store ``<cache_dir>/regions-*/`` (its ``manifest.json``) whose
    ``config[key] == match[key]`` for every key of ``match`` (whole values compared,
    not subsets: ``{"backbone": {...}}`` must be the backbone's full config, so that
    another checkpoint or input size never matches) and that holds tokens for at
    least one image. Tokens are detected from the committed shards (``shard.json``
    image entries with ``"tokens"``), so a store whose extraction was killed part way
    still counts for what it committed.

    Args:
        cache_dir: folder holding the ``regions-*`` stores (need not exist).
        match: top-level config keys and the values they must have, e.g.
            ``{"dataset": {...}, "backbone": {...}}``; non-empty.
        image_ids: when given, candidates are ranked by how many of these images
            they cache tokens for (else by all cached images); a store covering none
            of them is not returned.
        exclude: store directories never returned (e.g. the store about to be written).
    Returns:
        The opened candidate covering the most images (ties: first in name order),
        or None when there is none. Unreadable stores are reported with a warning
        and passed over.
    Raises:
        ValueError: ``match`` is empty or not a dict.
    """
    import glob
    import warnings

    if not isinstance(match, dict) or not match:
        raise ValueError(f"match must be a non-empty dict of config keys, got {match!r}")
    wanted = _normalised(match)
    excluded = {os.path.realpath(os.fspath(path)) for path in exclude}
    requested = None if image_ids is None else set(image_ids)
    best, best_count = None, 0
    pattern = os.path.join(glob.escape(os.fspath(cache_dir)), "regions-*", "manifest.json")
    for manifest_path in sorted(glob.glob(pattern)):
        store_dir = os.path.dirname(manifest_path)
        if os.path.realpath(store_dir) in excluded:
            continue
        try:
            config = read_manifest(store_dir).get("config") or {}
            if not isinstance(config, dict) or any(
                    key not in config or config[key] != value for key, value in wanted.items()):
                continue
            store = RegionStore.open(store_dir)
        except (OSError, ValueError, KeyError) as err:
            # json.JSONDecodeError is a ValueError; one damaged store must not stop a sweep
            warnings.warn(f"find_token_store: passing over {store_dir}: {err}", stacklevel=2)
            continue
        cached = store.token_image_ids()
        count = len(cached) if requested is None else len(requested.intersection(cached))
        if count > best_count:
            best, best_count = store, count
    return best
