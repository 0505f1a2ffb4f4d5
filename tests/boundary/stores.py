"""A small region store with every optional file (masks, cells, whole-image vectors),
built with the real writer, for the damage tests."""

from __future__ import annotations

import os

import numpy as np

from claid.store import RegionStoreWriter
from claid.structures import RegionDescriptors

DIM = 8
CONFIG = {"backbone": {"name": "tiny"}, "dtype": "float32"}


def item(image_id: str, n: int, seed: int) -> RegionDescriptors:
    """``n`` regions of a 64x48 image on a 4x4 grid of 16x12-pixel cells."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    corner = rng.uniform(0, 20, (n, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(4, 20, (n, 2))], axis=1).astype(np.float32)
    whole = rng.normal(size=DIM).astype(np.float32)
    return RegionDescriptors(image_id=image_id, image_size=(48, 64), boxes=boxes,
                             masks=rng.random((n, 4, 4)) > 0.4, depth=np.arange(n) % 3,
                             parent=np.r_[-1, np.zeros(n - 1, np.int64)], vectors=vectors,
                             whole_vector=whole / np.linalg.norm(whole))


def make_store(root, images: int = 4, shard_size: int = 2) -> str:
    store_dir = os.path.join(os.fspath(root), "regions-x")
    writer = RegionStoreWriter(store_dir, config=CONFIG, dim=DIM, dtype="float32", shard_size=shard_size)
    for k in range(images):
        writer.add(item(f"img/{k}.jpg", 5, seed=k), cell=(12.0, 16.0))
    writer.flush()
    return store_dir


def first_shard(store_dir: str) -> str:
    root = os.path.join(store_dir, "shards")
    return os.path.join(root, sorted(os.listdir(root))[0])
