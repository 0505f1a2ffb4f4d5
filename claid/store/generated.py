"""Generated region stores, written by the real writer: the input of the scale
benchmark (``experiments/bench_scale``) and of the memory tests.

    write_synthetic_store(store_dir, n_images=..., regions_per_image=..., dim=...)

Each image gets ``regions_per_image`` random unit vectors (seeded), random boxes
inside a 480 x 640 image and one whole-image vector; no masks (the index, search and
evaluation stages never read them). What differs from a real store is only the
content of the vectors: sizes, dtypes and the shard layout are the extractor's.
"""

from __future__ import annotations

import numpy as np

from claid.store.reader import RegionStore
from claid.store.writer import RegionStoreWriter
from claid.structures import RegionDescriptors

#: Images generated with one call to the random generator (bounds its memory).
BATCH_IMAGES = 512


def write_synthetic_store(store_dir: str, *, n_images: int, regions_per_image: int, dim: int,
                          dtype: str = "float16", seed: int = 0,
                          shard_size: int = 4096) -> RegionStore:
    """Write ``n_images`` x ``regions_per_image`` random unit vectors of length ``dim``
    as a region store (``dtype`` on disk) and open it.

    Args:
        store_dir: a new store directory (created).
        n_images: images, named ``img/<number>.jpg``.
        regions_per_image: regions per image (R >= 0).
        dim: descriptor length D.
        dtype: stored vector dtype, "float16" (the default store) or "float32".
        seed: seed of every generated value.
        shard_size: images per committed shard.
    Returns:
        the RegionStore of ``n_images * regions_per_image`` regions.
    """
    config = {"synthetic_store": {"n_images": n_images, "regions_per_image": regions_per_image,
                                  "dim": dim, "seed": seed}}
    writer = RegionStoreWriter(store_dir, config=config, dim=dim, dtype=dtype, shard_size=shard_size)
    rng = np.random.default_rng(seed)
    height, width = 480, 640
    depth = np.arange(1, regions_per_image + 1, dtype=np.int64)
    parent = np.full(regions_per_image, -1, dtype=np.int64)
    for first in range(0, n_images, BATCH_IMAGES):
        count = min(BATCH_IMAGES, n_images - first)
        vectors = rng.standard_normal((count, regions_per_image + 1, dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
        corner = rng.uniform(0, [width / 2, height / 2], size=(count, regions_per_image, 2))
        size = rng.uniform(16, [width / 2, height / 2], size=(count, regions_per_image, 2))
        boxes = np.concatenate([corner, corner + size], axis=2).astype(np.float32)
        for i in range(count):
            writer.add(RegionDescriptors(
                image_id=f"img/{first + i}.jpg", image_size=(height, width), boxes=boxes[i],
                masks=None, depth=depth, parent=parent, vectors=vectors[i, 1:],
                whole_vector=vectors[i, 0]))
    writer.flush()
    return RegionStore.open(store_dir)
