"""The extraction stage of a run: database images -> region store (resumable), and
the whole-image vectors stored beside the regions."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from claid.artifacts import atomic_save_npy, config_hash, database_key, plain

log = logging.getLogger(__name__)

#: Keys of the ``engine`` group that the run applies itself (claid/threads.py).
RUN_KEYS = ("threads",)


def region_descriptor_key(cfg) -> dict:
    """The descriptor settings that shape database region vectors: everything but
    how queries are described (``query``), so switching crop/pool reuses the store."""
    return {k: v for k, v in plain(cfg.descriptor).items() if k != "query"}


def store_key(cfg, bench) -> dict:
    """What the region store of ``bench`` under ``cfg`` is keyed by: the database
    images, backbone, cutter, region descriptor and stored dtype."""
    return {
        "dataset": database_key(bench),
        "backbone": plain(cfg.backbone),
        "cutter": plain(cfg.cutter),
        "descriptor": region_descriptor_key(cfg),
        "dtype": cfg.store.dtype,
    }


def feature_cache_keys(cfg, bench) -> tuple[dict, dict]:
    """What the two feature caches are keyed by: the backbone tokens by (database
    images, backbone, ``cache.token_dtype``); the descriptor maps by (database images,
    region-descriptor settings, ``cache.map_dtype``). Neither depends on the cutter,
    so every cutter variant shares them."""
    dataset = database_key(bench)
    return ({"dataset": dataset, "backbone": plain(cfg.backbone),
             "dtype": cfg.cache.token_dtype},
            {"dataset": dataset, "descriptor": region_descriptor_key(cfg),
             "dtype": cfg.cache.map_dtype})


def open_feature_caches(cfg, bench, cache_dir: Path):
    """The run's feature caches (created when absent): ``(tokens, feature_maps)``,
    each a :class:`claid.engine.feature_cache.FeatureCache`; the second is None when
    the descriptor needs no image. Both None when ``cache.tokens`` is off."""
    from hydra.utils import get_class

    from claid.engine.feature_cache import FeatureCache

    if not cfg.cache.tokens:
        return None, None
    for name in ("token_dtype", "map_dtype"):
        if cfg.cache[name] not in ("float16", "float32"):
            raise ValueError(f"cache.{name} must be float16 or float32, got {cfg.cache[name]!r}")
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

    from claid.components import build

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
        parts: :class:`claid.components.Components`, networks built on first use.
        cache_dir: where ``regions-<hash>`` (and the feature caches) live.
    Returns:
        The opened ``RegionStore`` at ``<cache>/regions-<hash>``; a store that
        already covers every database image is reused without building a network.
    """
    from claid.components import build
    from claid.store import RegionStore

    key = store_key(cfg, bench)
    store_dir = cache_dir / f"regions-{config_hash(key)}"
    done: set[str] = set()
    if store_dir.exists():
        store = RegionStore.open(str(store_dir))
        done = store.done_ids()
        if done >= set(bench.database):
            log.info("reusing region store %s", store_dir)
            return store
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
