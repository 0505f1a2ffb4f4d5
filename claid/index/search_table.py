"""The search table: what each indexed row is (its image and box), beside the index.

    region_table(store, whole_image) -> RegionTable     (image, box per row; vectors streamed)
    save_search_table(index_dir, table, ...)            regions.npz + search.json
    load_search_table(index_dir) -> meta, image, boxes  (what claid.search reads)

A table never holds the collection's vectors: they stay in the memory-mapped store
and are read in bounded chunks (``RegionTable.vector_chunks``, float16 -> float32 one
chunk at a time), so indexing a store larger than memory needs memory for one chunk
plus the index. What a search needs per row is kept as compact arrays: the image
number (int64, 8 B) and the box (4 x float32, 16 B).

On disk, in an index dir (schema ``SCHEMA_VERSIONS["search_table"]``)::

    regions.npz   region_image (N,) int64 row -> image number, boxes (N, 4) float32
    search.json   {"schema_version", "image_ids", "key", "files": {name: {"size", "sha256"}},
                   "descriptor": {"name": <registered claid name>, "settings": {...}}}

The descriptor is recorded by name and plain settings, never as a ``_target_``, so
reading an index dir runs no code it names (:mod:`claid.config.registered`).

``search.json`` is written last: an index dir without it is an interrupted build.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from claid.artifacts import DamagedArtifactError, atomic_save_npz, atomic_write_json, schema_version
from claid.checksums import folder_records
from claid.config.registered import record_descriptor

SCHEMA_VERSION = schema_version("search_table")

#: Rows converted to float32 at a time when streaming (64k x 2048 x 4 B = 512 MiB at
#: most; callers pass smaller chunks for wide vectors through ``rows``).
CHUNK_ROWS = 65536


@dataclass
class RegionTable:
    """All searchable rows: the store's regions, then (optionally) one extra row per
    image, with each row's image and box.

    Attributes:
        store: the RegionStore the first ``store_rows`` rows are read from (None for
            a table of extra rows only).
        extra_vectors: (n_extra, D) rows appended after the store's (float16 or
            float32, converted chunk by chunk): an array or a store's
            :class:`~claid.store.reader.WholeImageRows`; or None.
        region_image: (N,) int64 index into ``image_ids`` of each row.
        boxes: (N, 4) float32 boxes, original pixels.
        image_ids: the database image ids.
        dim: D, the vector length.
    """

    store: object | None
    extra_vectors: np.ndarray | None
    region_image: np.ndarray
    boxes: np.ndarray
    image_ids: list[str]
    dim: int

    @property
    def store_rows(self) -> int:
        """Rows read from the store (the first rows of the table)."""
        return 0 if self.store is None else int(self.store.num_regions)

    @property
    def n_rows(self) -> int:
        """N, the number of searchable rows."""
        return int(self.region_image.shape[0])

    def vector_chunks(self, rows: int = CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first row, (B, D) float32)`` for consecutive chunks of at most
        ``rows`` rows, in row order; each chunk is a fresh float32 array."""
        rows = max(1, int(rows))
        if self.store is not None:
            for start, stored in self.store.vector_chunks():
                for offset in range(0, stored.shape[0], rows):
                    part = stored[offset : offset + rows]
                    yield start + offset, np.asarray(part, dtype=np.float32)
        for start, extra in self._extra_chunks():
            for offset in range(0, extra.shape[0], rows):
                part = extra[offset : offset + rows]
                yield start + offset, np.array(part, dtype=np.float32)

    def _extra_chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """The extra rows as ``(first row, rows)``: the whole array, or a store's
        whole-image rows shard by shard (:class:`claid.store.reader.WholeImageRows`)."""
        if self.extra_vectors is None:
            return
        if hasattr(self.extra_vectors, "chunks"):
            for start, rows in self.extra_vectors.chunks():
                yield self.store_rows + start, rows
        else:
            yield self.store_rows, self.extra_vectors

    @property
    def stored_dtype(self) -> np.dtype:
        """The dtype the rows are kept in (float16 for a default store): one that
        holds both the store's and the extra rows' values exactly."""
        kinds = [np.dtype(self.store.dtype)] if self.store is not None else []
        if self.extra_vectors is not None:
            kinds.append(self.extra_vectors.dtype)
        return np.result_type(*kinds) if kinds else np.dtype(np.float32)

    def gather(self, rows: np.ndarray, dtype=np.float32) -> np.ndarray:
        """(len(rows), D) vectors of the given rows (sorted ascending, e.g. a
        training sample), read chunk by chunk, as ``dtype`` (``stored_dtype`` for
        half the memory of float32 on a float16 store)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (np.any(np.diff(rows) < 0) or rows[0] < 0 or rows[-1] >= self.n_rows):
            raise ValueError(f"gather needs sorted rows in [0, {self.n_rows})")
        out = np.empty((rows.size, self.dim), dtype=dtype)
        filled = 0
        for start, chunk in self._raw_chunks():
            stop = start + chunk.shape[0]
            lo, hi = np.searchsorted(rows, [start, stop])
            if hi > lo:
                out[filled : filled + hi - lo] = chunk[rows[lo:hi] - start]
                filled += hi - lo
        return out

    def _raw_chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """Chunks in their stored dtype (memory-mapped shards, no conversion)."""
        if self.store is not None:
            yield from self.store.vector_chunks()
        yield from self._extra_chunks()

    def vectors(self) -> np.ndarray:
        """(N, D) float32 copy of every row: for small tables and tests only (the
        stages stream with :meth:`vector_chunks`)."""
        return self.gather(np.arange(self.n_rows))


def full_boxes(store) -> np.ndarray:
    """(n_images, 4) float32 box of each whole store image, ``(0, 0, width, height)``."""
    sizes = np.asarray(store.image_sizes(), dtype=np.float32).reshape(-1, 2)
    boxes = np.zeros((len(sizes), 4), np.float32)
    boxes[:, 2], boxes[:, 3] = sizes[:, 1], sizes[:, 0]
    return boxes


def _rows(whole_image, dim: int | None = None):
    """An array (rows of ``dim``), or a store's whole-image rows left in the store."""
    if hasattr(whole_image, "chunks"):
        return whole_image
    rows = np.asarray(whole_image)
    return rows if dim is None else rows.reshape(-1, dim)


def region_table(store, whole_image: np.ndarray | None) -> RegionTable:
    """The store's regions, plus one whole-image region per image when ``whole_image``
    (n_images, D) is given. Reads only the per-region image numbers and boxes; the
    vectors stay in the store."""
    region_image = np.asarray(store.region_image(), dtype=np.int64)
    boxes = np.asarray(store.boxes(), dtype=np.float32).reshape(-1, 4)
    extra = None
    if whole_image is not None:
        extra = _rows(whole_image, store.dim)  # any float dtype: converted per chunk
        region_image = np.concatenate([region_image, np.arange(len(extra), dtype=np.int64)])
        boxes = np.concatenate([boxes, full_boxes(store)])
    return RegionTable(store, extra, region_image, boxes, list(store.image_ids), int(store.dim))


def whole_image_table(store, whole_image: np.ndarray) -> RegionTable:
    """One row per image: its whole-image vector and full box (the global baseline)."""
    whole_image = _rows(whole_image)  # float16 or float32: converted per chunk
    return RegionTable(None, whole_image, np.arange(len(whole_image), dtype=np.int64),
                       full_boxes(store), list(store.image_ids), int(whole_image.shape[1]))


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
         # size + sha256 of every other file of the dir (claid.checksums.index_dir_problems)
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
    except RecursionError:
        raise DamagedArtifactError(f"{meta_path}: nested deeper than the JSON reader allows; "
                                   "rebuild the index") from None
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError, an integer too long
        raise DamagedArtifactError(f"{meta_path}: not valid JSON ({str(err)[:160]}); rebuild the index") from None
    if not isinstance(meta, dict) or meta.get("schema_version") != SCHEMA_VERSION:
        found = meta.get("schema_version") if isinstance(meta, dict) else None
        raise DamagedArtifactError(f"{meta_path}: search table schema {found!r:.40}, this claid reads "
                         f"{SCHEMA_VERSION}; rebuild the index (run.py rebuilds it)")
    wrong = _meta_problem(meta)
    if wrong:
        raise DamagedArtifactError(f"{meta_path}: {wrong}; rebuild the index (run.py rebuilds it)")
    return meta


def _meta_problem(meta: dict) -> str | None:
    """What is wrong with the fields of a search.json (None when every one is usable)."""
    ids = meta.get("image_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return "'image_ids' must be a list of image ids"
    if not isinstance(meta.get("files"), dict):
        return "'files' must be an object"
    if not isinstance(meta.get("descriptor", {}), dict):
        return "'descriptor' must be an object"
    if not all(isinstance(r, dict) for r in meta["files"].values()):
        return "every record of 'files' must be an object"
    if "key" in meta and not isinstance(meta["key"], dict | None):
        return "'key' must be an object"
    return None


def load_search_table(index_dir: str | Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """(search.json content, region_image (N,) int64, boxes (N, 4) float32) of an index dir."""
    index_dir = Path(index_dir)
    meta = read_search_meta(index_dir)
    path = index_dir / "regions.npz"
    try:
        with np.load(path, allow_pickle=False) as table:
            region_image, boxes = table["region_image"], table["boxes"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        raise DamagedArtifactError(f"{path}: unreadable ({str(err)[:160]}); rebuild the index") from None
    n = region_image.shape[0] if region_image.ndim == 1 else -1
    if (n < 0 or region_image.dtype.kind not in "iu" or boxes.shape != (n, 4) or boxes.dtype.kind != "f"
            or (n and (region_image.min() < 0 or region_image.max() >= len(meta["image_ids"])))
            or not np.isfinite(boxes).all()):
        raise DamagedArtifactError(f"{path}: region_image {region_image.dtype}{region_image.shape} and "
                                   f"boxes {boxes.dtype}{boxes.shape} are not a table of finite boxes of "
                                   f"the {len(meta['image_ids'])} images; rebuild the index")
    return meta, region_image.astype(np.int64), boxes.astype(np.float32)
