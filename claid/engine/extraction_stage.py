"""The extraction stage of a run: database images -> region store (resumable), and
the whole-image vectors stored beside the regions.

    extract_stage(settings: ExtractionSettings, bench, source, cache_dir) -> RegionStore
    whole_image_stage(bench, store, source, cache_dir) -> (n_images, D) rows

``source`` is where the regions come from (chosen once by
:func:`claid.config.run_settings.region_source`): :class:`claid.engine.cut_source.CutRegions`
cuts a backbone's tokens, :class:`claid.detections.file_regions.RegionsFromFile` reads
another detector's file. Both meet :class:`claid.interfaces.RegionSource`: the stage
keys, locks, reuses, checks and lists the store the same way for either.

Under several ranks (:mod:`claid.engine.ranks`) every rank calls
:func:`extract_stage`; on global rank 0 it returns only a store that holds every
database image, listed afresh after all ranks committed, with every rank's timings
gathered into its summary (:mod:`claid.engine.rank_reports`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from claid.artifacts import clean_stale_temps, config_hash, database_key, file_lock
from claid.checksums import load_checked_npy, save_checked_npy

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class ExtractionSettings:
    """How the extraction writes and checks the region store (the ``engine``, ``store``
    and ``cache`` groups; ranges checked by :data:`claid.config.checks.VALUE_RULES`).

    Attributes:
        engine: the ``engine`` node without the run's own keys: the settings of
            :func:`claid.engine.extract_regions` (``_target_`` + ``_partial_``).
        precision: ``engine.precision`` in Lightning's full spelling (keys the store).
        store_dtype: ``store.dtype``, the stored descriptors' dtype.
        verify: ``store.verify``: ``checksums`` or ``sizes`` before a store is reused.
        cache_tokens: ``cache.tokens``: keep backbone tokens and descriptor maps.
        token_dtype, map_dtype: their stored dtypes.
    """

    engine: dict = field(default_factory=lambda: {"_target_": "claid.engine.extract_regions", "_partial_": True})
    precision: str = "32-true"
    store_dtype: str = "float16"
    verify: str = "checksums"
    cache_tokens: bool = False
    token_dtype: str = "float32"
    map_dtype: str = "float32"

    def __post_init__(self) -> None:  # the config's rules, also for direct callers
        from claid.config.checks import checked_values

        checked_values({"store.dtype": self.store_dtype, "store.verify": self.verify,
                        "cache.token_dtype": self.token_dtype, "cache.map_dtype": self.map_dtype})

    @property
    def shard_size(self) -> int:
        return int(self.engine.get("shard_size", 256))

    @property
    def progress(self) -> bool:
        return bool(self.engine.get("progress", True))


def region_descriptor_key(descriptor: dict) -> dict:
    """The descriptor settings that shape database region vectors: everything but
    how queries are described (``query``), so switching crop/pool reuses the store."""
    return {k: v for k, v in descriptor.items() if k != "query"}


def store_key(settings: ExtractionSettings, bench, source) -> dict:
    """What the region store of ``bench`` is keyed by: the database images, the
    source's parts (backbone, cutter, region descriptor; a file source: the file's
    content and no backbone), the stored dtype and everything else that changes the
    regions: the forward passes' precision (fp16 or bf16 tokens can flip a borderline
    cut) and how large photos are decoded."""
    from claid.images import decode_key

    return {
        "dataset": database_key(bench),
        **source.key_parts(),
        "dtype": settings.store_dtype,
        "precision": settings.precision,
        "decode": decode_key(bench.decode),  # how files are decoded (claid/images.py)
    }


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


def extract_stage(settings: ExtractionSettings, bench, source, cache_dir: Path):
    """Detect and describe the regions of every database image (resumable).

    With ``cache.tokens`` a cut source reads the backbone's tokens and the
    descriptor's feature maps from (and adds them to) the feature caches
    (:func:`claid.engine.cut_source.open_feature_caches`): a re-cut whose caches hold
    every image builds no network.

    Args:
        settings: how the store is written and checked (:class:`ExtractionSettings`).
        bench: the Benchmark whose ``database`` images are extracted.
        source: where the regions come from (:class:`claid.interfaces.RegionSource`).
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
    from claid.engine.rank_reports import clear_rank_reports, gather_rank_reports
    from claid.engine.ranks import is_global_zero, is_lone_process, launcher_state_restored

    verify = settings.verify
    key = store_key(settings, bench, source)
    store_dir = cache_dir / f"regions-{config_hash(key)}"
    if not is_global_zero():  # read before the launcher writes its variables
        # rank 0 of this job holds the lock and judges the store; this rank extracts
        # its share of rank 0's to-do list
        with launcher_state_restored():
            return source.extract(settings, bench, cache_dir, key, store_dir)
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
            source.extract(settings, bench, cache_dir, key, store_dir)
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


def whole_image_stage(bench, store, source, cache_dir: Path) -> np.ndarray:
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
    key = {"dataset": database_key(bench), "descriptor": region_descriptor_key(source.descriptor_node),
           "images": store.image_ids, **decode_entry(bench.decode)}
    path = cache_dir / f"wholeimage-{config_hash(key)}.npy"
    cached = load_checked_npy(path, built_from=key)  # None when absent, damaged or mismatched
    if cached is not None:
        return cached
    descriptor = source.descriptor()
    rows = []
    for image_id, (height, width) in zip(store.image_ids, store.image_sizes()):
        image = load_image(bench.path(image_id), options=bench.decode)
        box = np.array([[0, 0, width, height]], dtype=np.float32)
        rows.append(descriptor.describe(image, box)[0])
    vectors = np.stack(rows).astype(np.float32) if rows else np.zeros((0, descriptor.dim), np.float32)
    save_checked_npy(path, vectors, built_from=key)
    return vectors
