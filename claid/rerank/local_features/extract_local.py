"""Local descriptors of database images into a :class:`LocalFeatureStore`, and of one
query at query time; each a plain function of explicit arguments.

Per image: the backbone's PatchGrid (DINOv2 ViT-B/14 with registers, final-norm patch
tokens, as AMES was trained on), the detector's descriptors and weights over it, the
``k`` highest (optionally after the 3x3 non-maxima suppression), stored in float16 or,
for the binarised model, as 128-bit codes by that model's ITQ projection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from claid.artifacts import config_hash, file_lock
from claid.rerank.local_features.binarise import binary_codes
from claid.rerank.local_features.selection import select_local
from claid.rerank.local_features.store import LocalFeatures, LocalFeatureStore

log = logging.getLogger(__name__)


def store_key(settings, source_key: dict, detector_source: str, projection_source: str | None) -> dict:
    """What the stored descriptors depend on: the images and backbone (``source_key``,
    from the caller), the detector's weights, the selection and the encoding."""
    return {"source": source_key, "detector": detector_source, "k": settings.database_k, "nms": settings.nms,
            "encoding": "binary" if settings.binarised else "float16", "projection": projection_source}


def image_local_features(grid, detector, k: int, *, nms: bool, projection: np.ndarray | None) -> LocalFeatures:
    """One PatchGrid -> its kept descriptors (float16, or packed codes with ``projection``)."""
    descriptors, heat = detector.detect(grid.tokens, grid.grid)
    kept = select_local(heat, k, nms=nms)
    chosen = descriptors[kept]
    encoded = binary_codes(chosen, projection) if projection is not None else chosen.astype(np.float16)
    return LocalFeatures(encoded, kept, heat.ravel()[kept].astype(np.float32), tuple(grid.grid))


def local_features_stage(settings, images: Iterable, backbone, cache_dir: str | Path, *, source_key: dict,
                         detector, detector_source: str, projection: np.ndarray | None = None,
                         projection_source: str | None = None) -> LocalFeatureStore:
    """Extract and store the local descriptors of every image not stored yet.

    Args:
        settings: :class:`~claid.rerank.settings.AmesSettings` (``database_k``, ``nms``, ``binarised``).
        images: (image_id, PIL image or a function returning it) pairs; with a function,
            stored images are skipped without being read.
        backbone: has ``extract_patches(image) -> PatchGrid``.
        cache_dir: the store folder is ``<cache_dir>/local-<hash of the key>``.
        source_key: what identifies the images and the backbone (e.g. the database key
            and the backbone config).
        detector, detector_source: the built detector and where its weights came from.
        projection: (D, 128) ITQ projection of the binarised AMES model (binarised only).
    Returns:
        the store, holding every image of ``images``.
    """
    if settings.binarised and projection is None:
        raise ValueError("the binarised store needs the AMES model's ITQ projection")
    key = store_key(settings, source_key, detector_source, projection_source if settings.binarised else None)
    directory = Path(cache_dir) / f"local-{config_hash(key)}"
    directory.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(directory.parent / f".{directory.name}.lock", what="storing local descriptors"):
        store = LocalFeatureStore(directory, key=key) if (directory / "store.json").is_file() else None
        added = 0
        for image_id, image in images:
            if store is not None and image_id in store:
                continue
            grid = backbone.extract_patches(image() if callable(image) else image)
            if store is None:
                dim = grid.tokens.shape[1]
                store = LocalFeatureStore(directory, key=key, encoding="binary" if settings.binarised else "float16",
                                          dim=dim, bits=128, k=settings.database_k)
                if image_id in store:
                    continue
            store.append(image_id, image_local_features(grid, detector, settings.database_k, nms=settings.nms,
                                                        projection=projection if settings.binarised else None))
            added += 1
        if store is None:
            store = LocalFeatureStore(directory, key=key, encoding="binary" if settings.binarised else "float16",
                                      dim=768, bits=128, k=settings.database_k)
    log.info("local descriptors: %d images added, %d stored in %s (%.0f bytes an image)", added, len(store),
             directory, store.bytes_per_image())
    return store


def query_local_features(settings, image, box, backbone, detector) -> np.ndarray:
    """(n, D) float32 descriptors of one query: its crop (``box`` x1, y1, x2, y2 in pixels,
    or None for the whole image), the ``query_k`` highest."""
    if box is not None:
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        image = image.crop((x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)))
    grid = backbone.extract_patches(image)
    descriptors, heat = detector.detect(grid.tokens, grid.grid)
    return descriptors[select_local(heat, settings.query_k, nms=settings.nms)].astype(np.float32)
