"""The extraction stage of a run: database images -> region store (resumable), and
the whole-image vectors stored beside the regions.

Under several ranks (:mod:`claid.engine.ranks`) every rank calls
:func:`extract_stage`; on global rank 0 it returns only a store that holds every
database image, listed afresh after all ranks committed, with every rank's timings
gathered into its summary (:mod:`claid.engine.rank_reports`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from claid.artifacts import clean_stale_temps, config_hash, database_key, file_lock, plain
from claid.checksums import load_checked_npy, save_checked_npy

log = logging.getLogger(__name__)

#: Keys of the ``engine`` group that the run applies itself (claid/threads.py).
RUN_KEYS = ("threads",)
#: Lightning's short precision names and the full ones they stand for (one store key)
_PRECISION_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}


#: How long rank 0 keeps re-listing a store that looks incomplete after the barrier
#: before refusing it: a network filesystem's directory cache (NFS ``acdirmax``,
#: 60 s by default) may not yet show the shards other nodes just committed.
LISTING_SETTLE_SECONDS = 60.0


class IncompleteStoreError(RuntimeError):
    """After every rank committed, the region store still lacks database images."""


def _fresh_listing(store_dir: Path, database: list[str], settle_seconds: float):
    """The store listed afresh and the database images it lacks; while some are
    missing, list it again every 2 s for up to ``settle_seconds``."""
    from claid.store import RegionStore

    deadline = time.monotonic() + settle_seconds
    while True:
        store = RegionStore.open(str(store_dir))
        done = store.done_ids()
        missing = [image_id for image_id in database if image_id not in done]
        if not missing or time.monotonic() >= deadline:
            return store, missing
        log.info("region store lists %d of %d images; listing again (a network filesystem "
                 "may lag)", len(database) - len(missing), len(database))
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


def region_descriptor_key(cfg) -> dict:
    """The descriptor settings that shape database region vectors: everything but
    how queries are described (``query``), so switching crop/pool reuses the store."""
    return {k: v for k, v in plain(cfg.descriptor).items() if k != "query"}


def engine_precision(cfg) -> str:
    """``engine.precision`` in Lightning's full spelling (``32`` -> ``32-true``)."""
    value = str(cfg.engine.get("precision", "32-true"))
    return _PRECISION_ALIASES.get(value, value)


def store_key(cfg, bench) -> dict:
    """What the region store of ``bench`` under ``cfg`` is keyed by: the database
    images, backbone, cutter, region descriptor, stored dtype and everything else
    that changes the regions: the forward passes' ``engine.precision`` (fp16 or bf16
    tokens can flip a borderline cut) and how large photos are decoded."""
    from claid.cutters.from_file import file_store_key
    from claid.images import decode_key

    return file_store_key(cfg.cutter, {  # cutter=from_file: the file's content, no backbone
        "dataset": database_key(bench),
        "backbone": plain(cfg.backbone),
        "cutter": plain(cfg.cutter),
        "descriptor": region_descriptor_key(cfg),
        "dtype": cfg.store.dtype,
        "precision": engine_precision(cfg),
        "decode": decode_key(bench.decode),  # how files are decoded (claid/images.py)
    })


def _complete_store(store_dir: Path, bench, verify: str):
    """The store at ``store_dir`` when it covers every database image, else None.
    Damaged shards are dropped first (their images then count as not done)."""
    from claid.store import RegionStore
    from claid.store.integrity import drop_damaged_shards

    if not (store_dir / "manifest.json").exists():
        return None
    clean_stale_temps(store_dir)  # e.g. a summary rewrite killed part way
    drop_damaged_shards(str(store_dir), checksums=verify == "checksums")
    store = RegionStore.open(str(store_dir))
    return store if store.done_ids() >= set(bench.database) else None


def feature_cache_keys(cfg, bench) -> tuple[dict, dict]:
    """What the two feature caches are keyed by: the backbone tokens by (database
    images, backbone, ``cache.token_dtype``); the descriptor maps by (database images,
    region-descriptor settings, ``cache.map_dtype``); both by how images are decoded. Neither depends on the cutter,
    so every cutter variant shares them."""
    from claid.images import decode_key

    dataset, decode = database_key(bench), decode_key(bench.decode)
    return ({"dataset": dataset, "backbone": plain(cfg.backbone),
             "dtype": cfg.cache.token_dtype, "decode": decode},
            {"dataset": dataset, "descriptor": region_descriptor_key(cfg),
             "dtype": cfg.cache.map_dtype, "decode": decode})


def open_feature_caches(cfg, bench, cache_dir: Path):
    """The run's feature caches (created when absent): ``(tokens, feature_maps)``,
    each a :class:`claid.engine.feature_cache.FeatureCache`; the second is None when
    the descriptor needs no image. Both None when ``cache.tokens`` is off."""
    from hydra.utils import get_class

    from claid.config.checks import VALUE_RULES, check_values
    from claid.engine.feature_cache import FeatureCache

    if not cfg.cache.tokens:
        return None, None
    check_values(cfg, {k: VALUE_RULES[k] for k in ("cache.token_dtype", "cache.map_dtype")})
    token_key, map_key = feature_cache_keys(cfg, bench)
    tokens = FeatureCache(cache_dir / f"tokens-{config_hash(token_key)}", kind="tokens",
                          key=token_key, dtype=cfg.cache.token_dtype)
    maps = None
    if get_class(cfg.descriptor._target_).needs_image:
        maps = FeatureCache(cache_dir / f"featuremaps-{config_hash(map_key)}",
                            kind="feature_maps", key=map_key, dtype=cfg.cache.map_dtype)
    return tokens, maps


def _extraction_descriptor(cfg, parts, map_cache, todo_ids: list[str]):
    """The descriptor the extraction pools with: one built without its network when
    the class allows it and nothing to do needs a forward (its maps are cached, or it
    pools the detector's tokens), else the run's own (``parts``, built once)."""
    from hydra.utils import get_class

    from claid.config.build import build

    cls = get_class(cfg.descriptor._target_)
    if cls.poolable_without_network:
        if not cls.needs_image:
            return build(cfg.descriptor, network=False)
        if map_cache is not None and map_cache.geometry and not map_cache.missing(todo_ids):
            return build(cfg.descriptor, network=False, **map_cache.geometry)
    descriptor = parts.get("descriptor")
    if map_cache is not None:
        map_cache.set_geometry(descriptor.pooling_geometry())
    return descriptor


def extract_stage(cfg, bench, parts, cache_dir: Path):
    """Detect and describe the regions of every database image (resumable).

    With ``cache.tokens`` the backbone's tokens and the descriptor's feature maps
    are read from (and added to) the feature caches (:func:`open_feature_caches`):
    a re-cut whose caches hold every image builds no network.

    Args:
        cfg: the run's config (backbone, cutter, descriptor, engine, store, cache).
        bench: the Benchmark whose ``database`` images are extracted.
        parts: :class:`claid.config.build.Components`, networks built on first use.
        cache_dir: where ``regions-<hash>`` (and the feature caches) live.
    Returns:
        The opened ``RegionStore`` at ``<cache>/regions-<hash>``; a store that
        already covers every database image is reused without building a network
        (by a lone process, which starts any other ranks itself: ranks started by
        a launcher all enter the extraction, where rank 0's listing decides for all
        of them, since each one's own listing may lag). On a rank other
        than 0, the store as that rank sees it: the caller stops there.
    Raises:
        IncompleteStoreError: on rank 0, fresh listings after the extraction (for up
            to ``LISTING_SETTLE_SECONDS``) find database images neither stored nor
            skipped (names them).

    Two runs on the same store coordinate through ``<store>/.lock`` (taken by global
    rank 0 of each): one extracts, the other waits, then finds every image done and
    reuses the store (no image is extracted twice, nothing is lost). Before reuse the
    store is checked (``store.verify``: every file's sha256, or only sizes); a damaged
    shard is moved out of the store with a warning and its images are extracted again.
    """
    from claid.config.checks import VALUE_RULES, check_values
    from claid.engine.rank_reports import clear_rank_reports, gather_rank_reports
    from claid.engine.ranks import is_global_zero, is_lone_process, launcher_state_restored

    check_values(cfg, {"store.verify": VALUE_RULES["store.verify"]})  # also for direct callers
    verify = cfg.store.get("verify", "checksums")
    key = store_key(cfg, bench)
    store_dir = cache_dir / f"regions-{config_hash(key)}"
    if not is_global_zero():  # read before the launcher writes its variables
        # rank 0 of this job holds the lock and judges the store; this rank extracts
        # its share of rank 0's to-do list
        with launcher_state_restored():
            return _extract(cfg, bench, parts, cache_dir, key, store_dir)
    store_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(store_dir / ".lock", what="extracting regions"):
        # a lone process may skip the extraction (it starts any other ranks itself);
        # ranks started by a launcher all enter it, where rank 0's listing decides for
        # all of them, since each one's own listing may lag
        if is_lone_process():
            store = _complete_store(store_dir, bench, verify)
            if store is not None:
                log.info("reusing region store %s", store_dir)
                return store
        clear_rank_reports(store_dir)
        with launcher_state_restored():
            _extract(cfg, bench, parts, cache_dir, key, store_dir)
        summary = gather_rank_reports(store_dir)
        if summary is not None and summary.get("ranks_reporting", 1) > 1:
            for report in summary["ranks"]:
                log.info("rank %d (%s): %d images, %d skipped, %.1f s", report["rank"], report["host"],
                         report["images"], report["skipped"], report["seconds"])
        # a fresh listing, after every rank committed
        store, missing = _fresh_listing(store_dir, bench.database, LISTING_SETTLE_SECONDS)
    if missing:
        raise IncompleteStoreError(
            f"region store {store_dir} lacks {len(missing)} of {len(bench.database)} database "
            f"images after extraction (neither stored nor skipped), e.g. {missing[:5]}; nothing "
            "is indexed from an incomplete store: rerun the same command, it extracts only "
            "what is missing")
    return store


def _extract(cfg, bench, parts, cache_dir: Path, key: dict, store_dir: Path):
    """The images of ``bench`` not yet in ``store_dir`` -> the store; networks are
    built only for what the feature caches lack."""
    from claid.config.build import build
    from claid.cutters.from_file import reads_from_file
    from claid.store import RegionStore

    if reads_from_file(cfg.cutter):  # regions from a file: no backbone, no token cache
        from claid.detections.file_regions import extract_from_file

        return extract_from_file(cfg, bench, parts, store_dir, key)
    done: set[str] = set()
    if (store_dir / "manifest.json").exists():
        done = RegionStore.open(str(store_dir)).done_ids()
    images = [(image_id, bench.path(image_id)) for image_id in bench.database]
    todo_ids = [image_id for image_id in bench.database if image_id not in done]
    token_cache, map_cache = open_feature_caches(cfg, bench, cache_dir)
    backbone = None
    if token_cache is None or token_cache.missing(todo_ids):
        backbone = parts.get("backbone")
    else:
        log.info("backbone tokens of all %d images to do are cached in %s",
                 len(todo_ids), token_cache.directory)
    descriptor = _extraction_descriptor(cfg, parts, map_cache, todo_ids)
    # claid.engine.extract_regions with the engine settings (threads are set at the start of
    # the run by claid.threads, not passed to the extraction)
    extract = build({k: v for k, v in plain(cfg.engine).items() if k not in RUN_KEYS})
    return extract(
        images,
        backbone=backbone,
        cutter=parts.get("cutter"),
        descriptor=descriptor,
        store_dir=str(store_dir),
        config=key,
        dtype=cfg.store.dtype,
        token_cache=token_cache,
        map_cache=map_cache,
        decode=bench.decode,
    )


def whole_image_stage(cfg, bench, store, parts, cache_dir: Path) -> np.ndarray:
    """One descriptor per processed database image, pooled over the whole image
    (the global baseline, and the optional extra "whole image" region).

    The extraction stage stores them beside the regions (pooled from the same
    feature map); only a store written before that needs this second pass, whose
    result is cached as ``wholeimage-<hash>.npy``.

    Returns:
        (n_images, D) rows in ``store.image_ids`` order: the store's own
        (:class:`~claid.store.reader.WholeImageRows`, left in the memory-mapped
        shards and read chunk by chunk by the search tables: 7 GiB of float16 at 5M
        images x 768 never sit in memory), or a float32 array computed here.
    """
    from claid.images import decode_entry, load_image

    stored = store.whole_image_rows()
    if stored is not None:
        return stored
    key = {"dataset": database_key(bench), "descriptor": region_descriptor_key(cfg),
           "images": store.image_ids, **decode_entry(bench.decode)}
    path = cache_dir / f"wholeimage-{config_hash(key)}.npy"
    cached = load_checked_npy(path, built_from=key)  # None when absent, damaged or mismatched
    if cached is not None:
        return cached
    descriptor = parts.get("descriptor")
    rows = []
    for image_id, (height, width) in zip(store.image_ids, store.image_sizes()):
        image = load_image(bench.path(image_id), options=bench.decode)
        box = np.array([[0, 0, width, height]], dtype=np.float32)
        rows.append(descriptor.describe(image, box)[0])
    vectors = np.stack(rows).astype(np.float32) if rows else np.zeros((0, descriptor.dim), np.float32)
    save_checked_npy(path, vectors, built_from=key)
    return vectors
