"""The search table: what each indexed row is (its image and box), beside the index.

    region_table(store, whole_image) -> RegionTable     (vectors, image, box per row)
    save_search_table(index_dir, table, ...)            regions.npz + search.json
    load_search_table(index_dir) -> meta, image, boxes  (what claid.search reads)

On disk, in an index dir (schema ``SCHEMA_VERSIONS["search_table"]``)::

    regions.npz   region_image (N,) int64 row -> image number, boxes (N, 4) float32
    search.json   {"schema_version", "image_ids", "key", "files": {name: {"size", "sha256"}},
                   "descriptor": {"name": <registered claid name>, "settings": {...}}}

The descriptor is recorded by name and plain settings, never as a ``_target_``, so
reading an index dir runs no code it names (:mod:`claid.registered`).

``search.json`` is written last: an index dir without it is an interrupted build.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from claid.artifacts import DamagedArtifactError, atomic_save_npz, atomic_write_json, schema_version
from claid.integrity import folder_records
from claid.registered import record_descriptor

SCHEMA_VERSION = schema_version("search_table")


@dataclass
class RegionTable:
    """All searchable regions: rows of ``vectors`` with their image and box."""

    vectors: np.ndarray  # (N, D) float32
    region_image: np.ndarray  # (N,) int64 index into image_ids
    boxes: np.ndarray  # (N, 4) float32 original pixels
    image_ids: list[str]


def full_boxes(store) -> np.ndarray:
    """(n_images, 4) float32 box of each whole store image, ``(0, 0, width, height)``."""
    sizes = np.asarray(store.image_sizes(), dtype=np.float32).reshape(-1, 2)
    boxes = np.zeros((len(sizes), 4), np.float32)
    boxes[:, 2], boxes[:, 3] = sizes[:, 1], sizes[:, 0]
    return boxes


def region_table(store, whole_image: np.ndarray | None) -> RegionTable:
    """The store's regions, plus one whole-image region per image when ``whole_image``
    (n_images, D) is given."""
    vectors = np.asarray(store.vectors(), dtype=np.float32)
    region_image = np.asarray(store.region_image(), dtype=np.int64)
    boxes = np.asarray(store.boxes(), dtype=np.float32)
    if whole_image is not None:
        full = full_boxes(store)
        vectors = np.concatenate([vectors.reshape(-1, whole_image.shape[1]), whole_image])
        region_image = np.concatenate([region_image, np.arange(len(full), dtype=np.int64)])
        boxes = np.concatenate([boxes.reshape(-1, 4), full])
    return RegionTable(vectors, region_image, boxes, list(store.image_ids))


def whole_image_table(store, whole_image: np.ndarray) -> RegionTable:
    """One row per image: its whole-image vector and full box (the global baseline)."""
    return RegionTable(whole_image, np.arange(len(whole_image)), full_boxes(store),
                       list(store.image_ids))


def save_search_table(index_dir: Path, table: RegionTable, descriptor: dict, key: dict) -> None:
    """Write what ``claid.search`` needs beside the index: which image and box each
    indexed row is, and the descriptor config that describes new queries."""
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_npz(index_dir / "regions.npz", region_image=table.region_image, boxes=table.boxes)
    atomic_write_json(
        index_dir / "search.json",
        {"schema_version": SCHEMA_VERSION, "image_ids": table.image_ids,
         "descriptor": record_descriptor(descriptor), "key": key,
         # size + sha256 of every other file of the dir (claid.integrity.index_dir_problems)
         "files": folder_records(index_dir, exclude=("search.json",))},
    )


def read_search_meta(index_dir: str | Path) -> dict:
    """The search.json of an index dir: image ids, descriptor config, provenance."""
    meta_path = Path(index_dir) / "search.json"
    if not meta_path.exists():
        raise FileNotFoundError(
            f"{index_dir} is not a claid index dir (no search.json); run `python run.py` on the "
            "collection first and pass the index dir printed in its metrics.json (settings.index)"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedArtifactError(f"{meta_path}: not valid JSON ({err}); rebuild the index") from None
    if not isinstance(meta, dict) or meta.get("schema_version") != SCHEMA_VERSION:
        found = meta.get("schema_version") if isinstance(meta, dict) else None
        raise DamagedArtifactError(f"{meta_path}: search table schema {found}, this claid reads "
                         f"{SCHEMA_VERSION}; rebuild the index (run.py rebuilds it)")
    return meta


def load_search_table(index_dir: str | Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """(search.json content, region_image (N,) int64, boxes (N, 4) float32) of an index dir."""
    index_dir = Path(index_dir)
    meta = read_search_meta(index_dir)
    with np.load(index_dir / "regions.npz", allow_pickle=False) as table:
        return meta, table["region_image"].astype(np.int64), table["boxes"].astype(np.float32)
