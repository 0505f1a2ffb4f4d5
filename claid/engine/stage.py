"""The extraction stage of a run: database images -> region store (resumable), and
the whole-image vectors stored beside the regions."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from claid.artifacts import atomic_save_npy, config_hash, database_key, plain

log = logging.getLogger(__name__)


def region_descriptor_key(cfg) -> dict:
    """The descriptor settings that shape database region vectors: everything but
    how queries are described (``query``), so switching crop/pool reuses the store."""
    return {k: v for k, v in plain(cfg.descriptor).items() if k != "query"}


def store_key(cfg, bench) -> dict:
    """What the region store of ``bench`` under ``cfg`` is keyed by: the database
    images, backbone, cutter, region descriptor, stored dtype and image decoding."""
    from claid.images import DECODE_VERSION

    return {
        "dataset": database_key(bench),
        "backbone": plain(cfg.backbone),
        "cutter": plain(cfg.cutter),
        "descriptor": region_descriptor_key(cfg),
        "dtype": cfg.store.dtype,
        "decode": DECODE_VERSION,  # how large photos are decoded (claid/images.py)
    }


def extract_stage(cfg, bench, parts, cache_dir: Path):
    """Detect and describe the regions of every database image (resumable).

    Args:
        cfg: the run's config (backbone, cutter, descriptor, engine, store, cache).
        bench: the Benchmark whose ``database`` images are extracted.
        parts: :class:`claid.components.Components`, networks built on first use.
        cache_dir: where ``regions-<hash>`` lives.
    Returns:
        The opened ``RegionStore`` at ``<cache>/regions-<hash>``; a store that
        already covers every database image is reused without building a network.
    """
    from claid.components import build
    from claid.store import RegionStore, find_token_store

    key = store_key(cfg, bench)
    store_dir = cache_dir / f"regions-{config_hash(key)}"
    if store_dir.exists():
        store = RegionStore.open(str(store_dir))
        if store.done_ids() >= set(bench.database):
            log.info("reusing region store %s", store_dir)
            return store
    images = [(image_id, bench.path(image_id)) for image_id in bench.database]
    tokens_from, backbone = None, None
    if cfg.cache.tokens:
        match = {"dataset": key["dataset"], "backbone": key["backbone"]}
        tokens_from = find_token_store(
            str(cache_dir), match, image_ids=bench.database, exclude=[str(store_dir)]
        )
    if tokens_from is not None:
        cached = set(tokens_from.token_image_ids()) | {image for image, _ in tokens_from.skipped}
        log.info("reusing backbone tokens of %s for %d images", tokens_from.store_dir, len(cached))
        if not cached >= set(bench.database):
            backbone = parts.get("backbone")
    else:
        backbone = parts.get("backbone")
    extract = build(cfg.engine)  # claid.engine.extract_regions with the engine settings
    return extract(
        images,
        backbone=backbone,
        cutter=parts.get("cutter"),
        descriptor=parts.get("descriptor"),
        store_dir=str(store_dir),
        config=key,
        dtype=cfg.store.dtype,
        keep_tokens=bool(cfg.cache.tokens),
        token_dtype=cfg.cache.token_dtype,
        tokens_from=tokens_from,
    )


def whole_image_stage(cfg, bench, store, parts, cache_dir: Path) -> np.ndarray:
    """One descriptor per processed database image, pooled over the whole image
    (the global baseline, and the optional extra "whole image" region).

    The extraction stage stores them beside the regions (pooled from the same
    feature map); only a store written before that needs this second pass, whose
    result is cached as ``wholeimage-<hash>.npy``.

    Returns:
        (n_images, D) float32 in ``store.image_ids`` order.
    """
    from claid.images import load_image

    stored = store.whole_image_vectors(np.float32)
    if stored is not None:
        return stored
    key = {"dataset": database_key(bench), "descriptor": region_descriptor_key(cfg),
           "images": store.image_ids}
    path = cache_dir / f"wholeimage-{config_hash(key)}.npy"
    if path.exists():
        return np.load(path)
    descriptor = parts.get("descriptor")
    rows = []
    for image_id, (height, width) in zip(store.image_ids, store.image_sizes()):
        image = load_image(bench.path(image_id))
        box = np.array([[0, 0, width, height]], dtype=np.float32)
        rows.append(descriptor.describe(image, box)[0])
    vectors = np.stack(rows).astype(np.float32) if rows else np.zeros((0, descriptor.dim), np.float32)
    atomic_save_npy(path, vectors)
    return vectors
