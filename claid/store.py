"""The region store: every region of every image, with its descriptor, on disk.

Written by the extraction stage (:func:`claid.engine.extract_regions`), read by
indexing, search and evaluation. It is sharded (appendable, resumable, one writer
per DDP rank), memory-mappable (``numpy.load(mmap_mode="r")``) and versioned.

On-disk format, schema version 1
--------------------------------
::

    <store_dir>/                      named <cache>/regions-<config_hash(config)>
      manifest.json                   written once, atomically (exclusive create):
          {"format": "claid-region-store", "schema_version": 1, "claid_version",
           "config": <resolved config>, "config_hash", "dim", "dtype",
           "created_utc", "summary": <last extraction summary, rewritten atomically>}
      shards/<name>/                  one committed shard (see "commit" below)
          shard.json                  {"schema_version", "name", "rank", "n_images",
                                       "n_regions", "dim", "dtype",
                                       "images": [{"id", "height", "width", "n_regions",
                                                   "grid": [h, w] | null,
                                                   "cell": [cy, cx] | null,
                                                   "tokens": {...} | null}, ...],
                                       "skipped": [[image_id, reason], ...]}
          regions.npy                 (n_regions,) structured, one row per region:
                                        image i4        index into shard.json "images"
                                        box (4,) f4     x1, y1, x2, y2 original pixels,
                                                        exclusive end
                                        depth i4, parent i4 (index within its image, -1 none)
                                        mask_offset i8, mask_length i4  (bytes in masks.rle)
          vectors.npy                 (n_regions, dim) float16 or float32, L2-normalised rows
          masks.rle                   concatenated COCO compressed-RLE strings (pycocotools,
                                      ASCII) of the patch-level masks, size = the image's grid
          whole.npy                   optional, (n_images, dim) float16 or float32: one
                                      L2-normalised descriptor of each whole image, in
                                      shard.json "images" order ("whole": true in
                                      shard.json); absent in shards written before it
          tokens.npy                  optional, (sum of h*w, D_tok) float16 or float32 patch
                                      tokens (PatchGrid cache, see "tokens" in images:
                                      {"offset", "grid", "patch_size", "scale", "dtype"};
                                      "dtype" is absent in shards written before it was
                                      recorded, which are float16)
      staging/                        shards being written; never read

Regions of one image are contiguous and in the order the cutter output them.
``cell`` is the (height, width) of one patch in original-image pixels, used to map
a patch mask onto the image. An image with zero regions is listed in ``images``
with ``n_regions`` 0 (processed, nothing found); an image that could not be used
is listed in ``skipped`` with its reason.

Commit protocol (why a crash never leaves a half-written shard that is read): a
writer fills ``staging/<name>/``, fsyncs every file, writes ``shard.json`` last,
and then moves the whole directory into ``shards/`` with a single
``os.replace`` (atomic on POSIX). ``shards/`` is therefore the commit log: a
reader lists it and trusts nothing else, so there is no window in which a shard
is listed but incomplete, and DDP ranks never contend for a shared file. Shard
names are ``<seq>-r<rank>-<random>``; store order is the sorted name order.

Duplicates: should two shards hold the same image id (two ranks given the same
image, or an overlapping resume), readers keep its first occurrence in store
order and ignore the rest, so every image appears exactly once.

Reading (``RegionStore.open(store_dir)``): ``image_ids``, ``skipped``, ``config``,
``num_regions``, ``vectors()`` (N, dim) in the stored dtype (``vectors(np.float32)``
converts; a memory map when the store has one shard, else concatenated - stream
big stores with ``vector_chunks()``), ``region_image()``, ``boxes()``, ``depth()``,
``parent()``, ``image_sizes()``, ``whole_image_vectors()``, ``masks(indices)``, ``mask_pixels(i)``,
``regions_of(image_id)``, ``patch_grid(image_id)``, ``has_tokens(image_id)``,
``token_image_ids()``. Writing: ``RegionStoreWriter`` (one per rank);
``compact_store`` merges many small shards (e.g. after resumes).
The store directory is keyed by ``config_hash(config)`` so later stages and sweeps
that share the config reuse it.

Token cache: a store written with ``keep_tokens=True`` holds every image's detector
``PatchGrid``. :func:`find_token_store` finds such a store among the stores of a
cache directory by config (e.g. same dataset and backbone), and
``extract_regions(..., tokens_from=store)`` then runs only the cutter and the
descriptor on those images, so a cutter sweep skips the backbone. Stored as
float32 (``token_dtype="float32"``), the cached PatchGrid is bit-identical to the
backbone's output; float16 halves the size but rounds the tokens (relative error
~5e-4), which can flip a borderline cut.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

from claid.masks import patch_mask_to_pixels
from claid.structures import PatchGrid, RegionDescriptors

__all__ = [
    "SCHEMA_VERSION",
    "FORMAT_NAME",
    "REGION_DTYPE",
    "RegionStore",
    "RegionStoreWriter",
    "compact_store",
    "config_hash",
    "ensure_store",
    "find_token_store",
    "write_summary",
]

SCHEMA_VERSION = 1
FORMAT_NAME = "claid-region-store"
REGION_DTYPE = np.dtype(
    [
        ("image", "<i4"),
        ("box", "<f4", (4,)),
        ("depth", "<i4"),
        ("parent", "<i4"),
        ("mask_offset", "<i8"),
        ("mask_length", "<i4"),
    ]
)
_VECTOR_DTYPES = {"float16": np.float16, "float32": np.float32}
_TOKEN_DTYPES = _VECTOR_DTYPES  # same choice for the token cache
_LEGACY_TOKEN_DTYPE = "float16"  # shards that predate the "dtype" key in tokens info


# ---------------------------------------------------------------- file helpers


def config_hash(cfg: dict, length: int = 12) -> str:
    """Stable short hex hash of a JSON-able dict (key order does not matter).

    Args:
        cfg: the resolved config (nested dicts, lists, str, numbers, bool, None).
        length: number of hex characters kept (of sha256).
    Raises:
        ValueError: ``cfg`` holds something JSON cannot represent.
    """
    try:
        text = json.dumps(cfg, sort_keys=True, separators=(",", ":"), allow_nan=True)
    except TypeError as err:
        raise ValueError(f"config_hash needs a JSON-able dict: {err}") from err
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def _fsync_dir(path: str) -> None:
    """Make a rename/creation inside ``path`` durable (a no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def _write_bytes_synced(path: str, payload: bytes) -> None:
    with open(path, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def _save_npy_synced(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _json_bytes(obj) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True).encode("utf-8")


def write_json_atomic(path: str, obj) -> None:
    """Replace ``path`` with ``obj`` as JSON so readers see either old or new content."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    _write_bytes_synced(tmp, _json_bytes(obj))
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def _read_manifest(store_dir: str) -> dict:
    path = os.path.join(store_dir, "manifest.json")
    if not os.path.isfile(path):
        raise ValueError(f"{store_dir} is not a claid region store (no manifest.json)")
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: format is {manifest.get('format')!r}, not {FORMAT_NAME!r}")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: schema_version {manifest.get('schema_version')} but this claid reads "
            f"{SCHEMA_VERSION}; re-extract the regions or use a matching claid version"
        )
    return manifest


def _claid_version() -> str:
    from claid import __version__

    return __version__


# ---------------------------------------------------------------- reader


@dataclass
class _Shard:
    """One committed shard; its arrays are memory-mapped on first use, so opening a
    store with thousands of shards maps nothing."""

    name: str
    path: str
    info: dict
    image_keep: np.ndarray  # (n_images_in_shard,) bool, False for duplicates
    _regions: np.ndarray | None = None
    _vectors: np.ndarray | None = None
    _tokens: np.ndarray | None = None
    _whole: np.ndarray | None = None

    @property
    def regions(self) -> np.ndarray:
        """(n,) structured REGION_DTYPE memmap."""
        if self._regions is None:
            self._regions = np.load(os.path.join(self.path, "regions.npy"), mmap_mode="r")
        return self._regions

    @property
    def vectors(self) -> np.ndarray:
        """(n, dim) memmap in the stored dtype."""
        if self._vectors is None:
            self._vectors = np.load(os.path.join(self.path, "vectors.npy"), mmap_mode="r")
        return self._vectors

    @property
    def whole(self) -> np.ndarray | None:
        """(n_images_in_shard, dim) memmap of whole-image vectors, or None (older shard)."""
        if self._whole is None and self.info.get("whole"):
            self._whole = np.load(os.path.join(self.path, "whole.npy"), mmap_mode="r")
        return self._whole

    @property
    def tokens(self) -> np.ndarray:
        """(sum of h*w, D_tok) memmap of the cached patch tokens, stored dtype."""
        if self._tokens is None:
            path = os.path.join(self.path, "tokens.npy")
            if not os.path.isfile(path):
                raise ValueError(f"corrupt shard {self.path}: shard.json lists tokens but "
                                 "tokens.npy is missing")
            self._tokens = np.load(path, mmap_mode="r")
        return self._tokens


class RegionStore:
    """Read-only view of a region store (see the module docstring for the format).

    Arrays are over all regions of all processed images, in store order; region ``i``
    belongs to image ``image_ids[region_image()[i]]``. Build one with
    :meth:`RegionStore.open`.
    """

    def __init__(self, store_dir: str, manifest: dict, shards: list[_Shard],
                 skipped: list[tuple[str, str]]) -> None:
        self.store_dir = store_dir
        self.manifest = manifest
        self._shards = shards
        self.skipped: list[tuple[str, str]] = skipped
        self.image_ids: list[str] = []
        sizes, counts, grids, cells, tokens = [], [], [], [], []
        image_shard, image_row = [], []  # where each kept image's regions start
        shard_position = []  # each kept image's row in its shard's "images" (and whole.npy)
        for shard_index, shard in enumerate(shards):
            row = 0
            for position, (keep, entry) in enumerate(zip(shard.image_keep, shard.info["images"])):
                row += entry["n_regions"]
                if not keep:
                    continue
                shard_position.append(position)
                image_shard.append(shard_index)
                image_row.append(row - entry["n_regions"])
                self.image_ids.append(entry["id"])
                sizes.append((entry["height"], entry["width"]))
                counts.append(entry["n_regions"])
                grids.append(entry.get("grid"))
                cells.append(entry.get("cell"))
                tokens.append((shard, entry.get("tokens")))
        self._sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
        self._counts = np.asarray(counts, dtype=np.int64)
        self._grids = grids
        self._cells = cells
        self._tokens = tokens
        self._image_shard = np.asarray(image_shard, dtype=np.int64)
        self._image_row = np.asarray(image_row, dtype=np.int64)
        self._shard_position = np.asarray(shard_position, dtype=np.int64)
        self._first_region = np.concatenate([[0], np.cumsum(self._counts)]).astype(np.int64)
        self._index = {image_id: i for i, image_id in enumerate(self.image_ids)}

    # -- construction

    @classmethod
    def open(cls, store_dir: str) -> RegionStore:
        """Open the store in ``store_dir`` for reading (only committed shards are seen).

        Raises:
            ValueError: no store there, wrong schema version, or a shard whose files
                disagree with its shard.json (corruption, not a partial write).
        """
        store_dir = os.fspath(store_dir)
        manifest = _read_manifest(store_dir)
        shard_root = os.path.join(store_dir, "shards")
        names = sorted(
            name for name in (os.listdir(shard_root) if os.path.isdir(shard_root) else [])
            if not name.startswith(".") and os.path.isdir(os.path.join(shard_root, name))
        )
        seen: set[str] = set()
        shards: list[_Shard] = []
        skipped: dict[str, str] = {}
        for name in names:
            shard = _open_shard(os.path.join(shard_root, name), name, manifest)
            keep = np.zeros(len(shard.info["images"]), dtype=bool)
            for k, entry in enumerate(shard.info["images"]):
                keep[k] = entry["id"] not in seen
                seen.add(entry["id"])
            shard.image_keep = keep
            for image_id, reason in shard.info["skipped"]:
                skipped.setdefault(image_id, reason)
            shards.append(shard)
        skipped_list = [(i, r) for i, r in skipped.items() if i not in seen]
        return cls(store_dir, manifest, shards, skipped_list)

    # -- metadata

    @property
    def config(self) -> dict:
        """The resolved config that produced this store."""
        return self.manifest["config"]

    @property
    def config_hash(self) -> str:
        return self.manifest["config_hash"]

    @property
    def schema_version(self) -> int:
        return int(self.manifest["schema_version"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def dtype(self) -> np.dtype:
        """The stored vector dtype (float16 or float32)."""
        return np.dtype(self.manifest["dtype"])

    @property
    def summary(self) -> dict | None:
        """The summary of the last extraction run (images, regions, skipped...)."""
        return self.manifest.get("summary")

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    @property
    def num_regions(self) -> int:
        return int(self._first_region[-1])

    def __len__(self) -> int:
        return self.num_regions

    def done_ids(self) -> set[str]:
        """Image ids that need no more work: processed or skipped."""
        return set(self.image_ids) | {image_id for image_id, _ in self.skipped}

    # -- region columns

    def _region_keep(self, shard: _Shard) -> np.ndarray | None:
        """(n_regions_in_shard,) bool keep mask, None when every region is kept."""
        if shard.image_keep.all():
            return None
        return shard.image_keep[np.asarray(shard.regions["image"])]

    def _column(self, field: str) -> np.ndarray:
        parts = []
        for shard in self._shards:
            keep = self._region_keep(shard)
            column = shard.regions[field]
            parts.append(np.asarray(column if keep is None else column[keep]))
        if not parts:
            shape = (0, 4) if field == "box" else (0,)
            return np.zeros(shape, dtype=REGION_DTYPE[field].base)
        return np.concatenate(parts)

    def vector_chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_region_index, (n_s, dim) vectors)`` shard by shard, in the
        stored dtype; memory-mapped (no copy) unless the shard holds duplicates.
        Use this to stream tens of millions of vectors into an index."""
        start = 0
        for shard in self._shards:
            keep = self._region_keep(shard)
            chunk = shard.vectors if keep is None else np.asarray(shard.vectors[keep])
            yield start, chunk
            start += int(chunk.shape[0])

    def vectors(self, dtype: str | np.dtype | None = None) -> np.ndarray:
        """(N, dim) region descriptors, L2-normalised rows.

        Args:
            dtype: None keeps the stored dtype (see :attr:`dtype`); e.g. ``np.float32``
                converts. With a single duplicate-free shard and dtype None the result
                is the memory map itself; otherwise shards are concatenated in memory
                (use :meth:`vector_chunks` to stream instead).
        """
        chunks = [chunk for _, chunk in self.vector_chunks()]
        if not chunks:
            out = np.zeros((0, self.dim), dtype=self.dtype)
        elif len(chunks) == 1:
            out = chunks[0]
        else:
            out = np.concatenate(chunks)
        return out if dtype is None else out.astype(dtype, copy=False)

    def region_image(self) -> np.ndarray:
        """(N,) int64 index into :attr:`image_ids` of each region's image."""
        return np.repeat(np.arange(self.num_images, dtype=np.int64), self._counts)

    def boxes(self) -> np.ndarray:
        """(N, 4) float32 boxes ``(x1, y1, x2, y2)``, original pixels, exclusive end."""
        return self._column("box").astype(np.float32, copy=False).reshape(-1, 4)

    def depth(self) -> np.ndarray:
        """(N,) int64 bisections from the root to the region (>= 1)."""
        return self._column("depth").astype(np.int64)

    def parent(self) -> np.ndarray:
        """(N,) int64 index *within the region's image* of its output parent, -1 none."""
        return self._column("parent").astype(np.int64)

    def image_sizes(self) -> np.ndarray:
        """(n_images, 2) int64 (height, width) of each image, original pixels."""
        return self._sizes

    def whole_image_vectors(self, dtype: str | np.dtype | None = None) -> np.ndarray | None:
        """(n_images, dim) whole-image descriptors in :attr:`image_ids` order (stored
        dtype unless ``dtype``), or None when some shard predates them."""
        parts = []
        for shard in self._shards:
            if shard.whole is None:
                return None
            parts.append(np.asarray(shard.whole[shard.image_keep]))
        out = np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=self.dtype)
        return out if dtype is None else out.astype(dtype, copy=False)

    def region_counts(self) -> np.ndarray:
        """(n_images,) int64 number of regions of each image."""
        return self._counts

    # -- masks

    def _locate(self, region: int) -> tuple[_Shard, int, int]:
        """Global region index -> (shard, row in shard, global image index)."""
        if not 0 <= region < self.num_regions:
            raise IndexError(f"region {region} out of range [0, {self.num_regions})")
        image = int(np.searchsorted(self._first_region, region, side="right") - 1)
        within = region - int(self._first_region[image])
        shard = self._shards[int(self._image_shard[image])]
        return shard, int(self._image_row[image]) + within, image

    def _decode_mask(self, shard: _Shard, row: int, image: int) -> np.ndarray:
        grid = self._grids[image]
        length = int(shard.regions["mask_length"][row])
        if grid is None or length == 0:
            raise ValueError(f"image {self.image_ids[image]!r} was stored without masks")
        offset = int(shard.regions["mask_offset"][row])
        with open(os.path.join(shard.path, "masks.rle"), "rb") as f:
            f.seek(offset)
            counts = f.read(length)
        rle = {"size": [int(grid[0]), int(grid[1])], "counts": counts}
        return mask_utils.decode(rle).astype(bool)

    def masks(self, region_indices) -> np.ndarray:
        """(k, h, w) bool patch-level masks of the given global region indices.

        All requested regions must share one grid (always true for the regions of
        one image); use :meth:`mask_pixels` for a mask in original-image pixels.
        """
        indices = np.asarray(region_indices, dtype=np.int64).reshape(-1)
        decoded = [self._decode_mask(*self._locate(int(i))) for i in indices]
        shapes = {m.shape for m in decoded}
        if len(shapes) > 1:
            raise ValueError(f"regions have different grids {sorted(shapes)}; "
                             "ask for the regions of one image at a time")
        if not decoded:
            return np.zeros((0, 0, 0), dtype=bool)
        return np.stack(decoded)

    def mask_pixels(self, region: int) -> np.ndarray:
        """(H, W) bool mask of one region in original-image pixels (``claid.masks`` rule)."""
        shard, row, image = self._locate(int(region))
        size = (int(self._sizes[image][0]), int(self._sizes[image][1]))
        return patch_mask_to_pixels(self._decode_mask(shard, row, image), self.cell(image), size)

    def cell(self, image: int) -> tuple[float, float]:
        """(cy, cx) original pixels per patch of the image at index ``image`` of ``image_ids``."""
        cell = self._cells[image]
        if cell is None:
            raise ValueError(f"image {self.image_ids[image]!r} has no patch cell size stored")
        return float(cell[0]), float(cell[1])

    # -- per image

    def image_index(self, image_id: str) -> int:
        try:
            return self._index[image_id]
        except KeyError:
            raise KeyError(f"image {image_id!r} is not in the store") from None

    def regions_of(self, image_id: str) -> RegionDescriptors:
        """All regions of one image, vectors as float32."""
        image = self.image_index(image_id)
        count = int(self._counts[image])
        shard = self._shards[int(self._image_shard[image])]
        start = int(self._image_row[image])
        rows = slice(start, start + count)
        regions = np.asarray(shard.regions[rows])
        grid = self._grids[image]
        masks = None
        if grid is not None and count == 0:
            masks = np.zeros((0, int(grid[0]), int(grid[1])), dtype=bool)
        elif grid is not None and (regions["mask_length"] > 0).all():
            masks = np.stack([self._decode_mask(shard, start + k, image) for k in range(count)])
        height, width = (int(v) for v in self._sizes[image])
        return RegionDescriptors(
            image_id=image_id,
            image_size=(height, width),
            boxes=regions["box"].astype(np.float32).reshape(-1, 4),
            masks=masks,
            depth=regions["depth"].astype(np.int64),
            parent=regions["parent"].astype(np.int64),
            vectors=np.asarray(shard.vectors[rows], dtype=np.float32).reshape(count, self.dim),
            whole_vector=(None if shard.whole is None else
                          np.asarray(shard.whole[self._shard_position[image]], dtype=np.float32)),
        )

    def has_tokens(self, image_id: str) -> bool:
        """Whether the store caches the PatchGrid of ``image_id`` (False if the image
        is not in the store, or was stored without tokens)."""
        image = self._index.get(image_id)
        return image is not None and self._tokens[image][1] is not None

    def token_image_ids(self) -> list[str]:
        """Ids of the images whose PatchGrid is cached, in store order."""
        return [image_id for image_id, (_, info) in zip(self.image_ids, self._tokens)
                if info is not None]

    def token_dtype(self, image_id: str) -> str:
        """"float16" or "float32": how the tokens of ``image_id`` are stored."""
        image = self.image_index(image_id)
        info = self._tokens[image][1]
        if info is None:
            raise ValueError(f"store {self.store_dir} holds no tokens for {image_id!r}")
        return str(info.get("dtype", _LEGACY_TOKEN_DTYPE))

    def patch_grid(self, image_id: str) -> PatchGrid:
        """The cached detector tokens of one image (stores written with keep_tokens),
        as float32; exactly the backbone's output when stored as float32."""
        image = self.image_index(image_id)
        shard, info = self._tokens[image]
        if info is None:
            raise ValueError(f"store {self.store_dir} holds no tokens for {image_id!r}; "
                             "extract with keep_tokens=True")
        h, w = info["grid"]
        rows = shard.tokens[info["offset"]: info["offset"] + h * w]
        if rows.shape[0] != h * w:
            raise ValueError(f"corrupt shard {shard.path}: tokens.npy ends inside the tokens "
                             f"of {image_id!r}")
        return PatchGrid(
            tokens=np.asarray(rows, dtype=np.float32),
            grid=(h, w),
            patch_size=int(info["patch_size"]),
            scale=(float(info["scale"][0]), float(info["scale"][1])),
            image_size=tuple(int(v) for v in self._sizes[image]),
        )


def _npy_header(path: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a .npy file from its header; checks that the data is all
    there (a truncated file is corrupt) without reading or mapping it."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        data_start = f.tell()
    expected = data_start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if os.path.getsize(path) < expected:
        raise ValueError(f"{os.path.basename(path)} is shorter than its header says")
    return tuple(shape), dtype


def _open_shard(path: str, name: str, manifest: dict) -> _Shard:
    try:
        with open(os.path.join(path, "shard.json"), encoding="utf-8") as f:
            info = json.load(f)
        regions_shape, regions_dtype = _npy_header(os.path.join(path, "regions.npy"))
        vectors_shape, vectors_dtype = _npy_header(os.path.join(path, "vectors.npy"))
    except (OSError, ValueError) as err:
        # Committed shards are complete by construction; this is damage after the fact.
        raise ValueError(f"corrupt shard {path}: {err}") from err
    n = int(info["n_regions"])
    dim = int(manifest["dim"])
    problems = []
    if info.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"schema_version {info.get('schema_version')}")
    if regions_dtype != REGION_DTYPE or regions_shape != (n,):
        problems.append(f"regions.npy {regions_dtype}{regions_shape} vs ({n},)")
    if vectors_shape != (n, dim) or vectors_dtype != np.dtype(manifest["dtype"]):
        problems.append(f"vectors.npy {vectors_dtype}{vectors_shape} vs ({n}, {dim})")
    if sum(e["n_regions"] for e in info["images"]) != n:
        problems.append("image region counts do not add up to n_regions")
    if info.get("whole"):
        try:
            whole_shape, whole_dtype = _npy_header(os.path.join(path, "whole.npy"))
        except (OSError, ValueError) as err:
            raise ValueError(f"corrupt shard {path}: {err}") from err
        n_images = len(info["images"])
        if whole_shape != (n_images, dim) or whole_dtype != np.dtype(manifest["dtype"]):
            problems.append(f"whole.npy {whole_dtype}{whole_shape} vs ({n_images}, {dim})")
    if problems:
        raise ValueError(f"corrupt shard {path}: " + "; ".join(problems))
    return _Shard(name, path, info, np.ones(0, bool))


# ---------------------------------------------------------------- writer


def ensure_store(store_dir: str, *, config: dict, dim: int, dtype: str = "float16") -> None:
    """Create the store's manifest, or check that the existing one matches.

    Safe to call from several ranks at once: the manifest is created with an
    exclusive link, so exactly one version wins and the others are checked against it.

    Raises:
        ValueError: the existing store was made with another config, dim or dtype.
    """
    if dtype not in _VECTOR_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_VECTOR_DTYPES)}, got {dtype!r}")
    store_dir = os.fspath(store_dir)
    os.makedirs(store_dir, exist_ok=True)
    path = os.path.join(store_dir, "manifest.json")
    manifest = {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "claid_version": _claid_version(),
        "config": config,
        "config_hash": config_hash(config),
        "dim": int(dim),
        "dtype": dtype,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if not os.path.exists(path):
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        _write_bytes_synced(tmp, _json_bytes(manifest))
        try:
            # link() fails if another rank created it first: exactly one manifest wins.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.remove(tmp)
        _fsync_dir(store_dir)
    existing = _read_manifest(store_dir)
    for key in ("config_hash", "dim", "dtype"):
        if existing[key] != manifest[key]:
            raise ValueError(
                f"store {store_dir} has {key}={existing[key]!r} but this run has "
                f"{manifest[key]!r}; use a store directory keyed by this config's hash"
            )


class RegionStoreWriter:
    """Appends images to a region store, one atomically committed shard at a time.

    Creates the store (manifest) if needed, or checks that the existing one was made
    by the same config. Buffered images are committed as a shard every
    ``shard_size`` images and on :meth:`flush`; a crash loses at most the buffer,
    which a rerun recomputes.

    Args:
        store_dir: the store directory (created).
        config: resolved config that produces this store; its hash must match an
            existing store's.
        dim: descriptor length.
        dtype: "float16" or "float32", the stored vector dtype.
        rank: this process's DDP rank (goes into shard names).
        shard_size: images per shard.
        token_dtype: "float16" or "float32", how cached PatchGrid tokens are stored
            (float32 keeps them bit-exact, see the module docstring).
    """

    def __init__(self, store_dir: str, *, config: dict, dim: int, dtype: str = "float16",
                 rank: int = 0, shard_size: int = 256, token_dtype: str = "float16") -> None:
        if dtype not in _VECTOR_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_VECTOR_DTYPES)}, got {dtype!r}")
        if token_dtype not in _TOKEN_DTYPES:
            raise ValueError(f"token_dtype must be one of {sorted(_TOKEN_DTYPES)}, "
                             f"got {token_dtype!r}")
        if int(dim) <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        if int(shard_size) <= 0:
            raise ValueError(f"shard_size must be positive, got {shard_size}")
        self.store_dir = os.fspath(store_dir)
        self.dim = int(dim)
        self.dtype = dtype
        self.rank = int(rank)
        self.shard_size = int(shard_size)
        self.token_dtype = token_dtype
        ensure_store(self.store_dir, config=config, dim=self.dim, dtype=dtype)
        self._shard_root = os.path.join(self.store_dir, "shards")
        self._staging_root = os.path.join(self.store_dir, "staging")
        os.makedirs(self._shard_root, exist_ok=True)
        os.makedirs(self._staging_root, exist_ok=True)
        self._drop_own_staging()
        # after every existing shard (store order = name order = commit order), also
        # when earlier shards were removed by compaction
        seqs = [int(n.split("-", 1)[0]) for n in os.listdir(self._shard_root)
                if n.split("-", 1)[0].isdigit()]
        self._seq = max(seqs, default=-1) + 1
        self._reset_buffer()
        self.committed_shards: list[str] = []

    def _drop_own_staging(self) -> None:
        """Remove this rank's leftovers from a crashed run (never another rank's)."""
        for name in os.listdir(self._staging_root):
            if f"-r{self.rank:03d}-" in name:
                shutil.rmtree(os.path.join(self._staging_root, name), ignore_errors=True)

    def _reset_buffer(self) -> None:
        self._images: list[dict] = []
        self._skipped: list[list[str]] = []
        self._regions: list[np.ndarray] = []
        self._vectors: list[np.ndarray] = []
        self._masks: list[bytes] = []
        self._tokens: list[np.ndarray] = []
        self._whole: list[np.ndarray | None] = []
        self._mask_bytes = 0
        self._token_rows = 0

    @property
    def buffered_images(self) -> int:
        return len(self._images) + len(self._skipped)

    def add(self, item: RegionDescriptors, *, cell: tuple[float, float] | None = None,
            patch_grid: PatchGrid | None = None) -> None:
        """Buffer one processed image (zero regions allowed).

        Args:
            item: its regions; ``vectors`` (R, dim), ``boxes`` (R, 4) pixels,
                ``masks`` (R, h, w) patch masks or None.
            cell: (cy, cx) original pixels per patch, to map masks to pixels.
            patch_grid: the detector tokens to cache (stored as ``token_dtype``), or None.
        """
        count = len(item)
        whole = None  # checked before anything is buffered: a refused item leaves no trace
        if item.whole_vector is not None:
            whole = np.asarray(item.whole_vector, dtype=np.float32).reshape(-1)
            if whole.shape != (self.dim,):
                raise ValueError(f"{item.image_id}: whole_vector has shape {whole.shape}, "
                                 f"store dim is {self.dim}")
        vectors = np.asarray(item.vectors).reshape(count, -1) if count else np.zeros((0, self.dim))
        if vectors.shape[1] != self.dim:
            raise ValueError(f"{item.image_id}: vectors have dim {vectors.shape[1]}, "
                             f"store has {self.dim}")
        for name in ("boxes", "depth", "parent"):
            if len(getattr(item, name)) != count:
                raise ValueError(f"{item.image_id}: {name} has {len(getattr(item, name))} rows, "
                                 f"vectors {count}")
        rows = np.zeros(count, dtype=REGION_DTYPE)
        rows["image"] = len(self._images)
        rows["box"] = np.asarray(item.boxes, dtype=np.float32).reshape(count, 4)
        rows["depth"] = item.depth
        rows["parent"] = item.parent
        grid = None
        if item.masks is not None:
            masks = np.asarray(item.masks, dtype=bool)
            if masks.ndim != 3 or masks.shape[0] != count:
                raise ValueError(f"{item.image_id}: masks shape {masks.shape}, expected "
                                 f"({count}, h, w)")
            grid = [int(masks.shape[1]), int(masks.shape[2])]
            if count:
                encoded = mask_utils.encode(
                    np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))
                )
                for k, rle in enumerate(encoded):
                    counts = rle["counts"]
                    rows["mask_offset"][k] = self._mask_bytes
                    rows["mask_length"][k] = len(counts)
                    self._masks.append(counts)
                    self._mask_bytes += len(counts)
        tokens_info = None
        if patch_grid is not None:
            h, w = patch_grid.grid
            tokens_info = {
                "offset": self._token_rows,
                "grid": [int(h), int(w)],
                "patch_size": int(patch_grid.patch_size),
                "scale": [float(patch_grid.scale[0]), float(patch_grid.scale[1])],
                "dtype": self.token_dtype,
            }
            self._tokens.append(np.asarray(patch_grid.tokens,
                                           dtype=_TOKEN_DTYPES[self.token_dtype]))
            self._token_rows += h * w
        self._images.append({
            "id": item.image_id,
            "height": int(item.image_size[0]),
            "width": int(item.image_size[1]),
            "n_regions": count,
            "grid": grid,
            "cell": None if cell is None else [float(cell[0]), float(cell[1])],
            "tokens": tokens_info,
        })
        self._regions.append(rows)
        self._vectors.append(vectors.astype(_VECTOR_DTYPES[self.dtype]))
        self._whole.append(whole)
        self._maybe_flush()

    def skip(self, image_id: str, reason: str) -> None:
        """Record that ``image_id`` could not be used, and why."""
        self._skipped.append([image_id, str(reason)])
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if self.buffered_images >= self.shard_size:
            self.flush()

    def flush(self) -> str | None:
        """Commit the buffered images as one shard; returns its name (None if empty)."""
        if not self.buffered_images:
            return None
        name = f"{self._seq:06d}-r{self.rank:03d}-{uuid.uuid4().hex[:8]}"
        staging = os.path.join(self._staging_root, name)
        os.makedirs(staging)
        regions = (np.concatenate(self._regions) if self._regions
                   else np.zeros(0, dtype=REGION_DTYPE))
        vectors = (np.concatenate(self._vectors) if self._vectors
                   else np.zeros((0, self.dim), dtype=_VECTOR_DTYPES[self.dtype]))
        _save_npy_synced(os.path.join(staging, "regions.npy"), regions)
        _save_npy_synced(os.path.join(staging, "vectors.npy"), vectors)
        _write_bytes_synced(os.path.join(staging, "masks.rle"), b"".join(self._masks))
        if self._tokens:
            _save_npy_synced(os.path.join(staging, "tokens.npy"), np.concatenate(self._tokens))
        # whole-image vectors only when every image of the shard has one
        has_whole = all(w is not None for w in self._whole)
        if has_whole:
            whole = (np.stack(self._whole) if self._whole else np.zeros((0, self.dim)))
            _save_npy_synced(os.path.join(staging, "whole.npy"),
                             whole.astype(_VECTOR_DTYPES[self.dtype]))
        info = {
            "schema_version": SCHEMA_VERSION,
            "name": name,
            "rank": self.rank,
            "n_images": len(self._images),
            "n_regions": int(regions.shape[0]),
            "dim": self.dim,
            "dtype": self.dtype,
            "images": self._images,
            "skipped": self._skipped,
            "whole": has_whole,
        }
        # shard.json last: a staging dir without it is unmistakably incomplete.
        _write_bytes_synced(os.path.join(staging, "shard.json"), _json_bytes(info))
        _fsync_dir(staging)
        os.replace(staging, os.path.join(self._shard_root, name))  # the commit
        _fsync_dir(self._shard_root)
        self._seq += 1
        self.committed_shards.append(name)
        self._reset_buffer()
        return name

    def discard(self) -> None:
        """Drop the buffer without committing (after a failure)."""
        self._reset_buffer()


def write_summary(store_dir: str, summary: dict) -> None:
    """Record the summary of an extraction run in the manifest (atomic rewrite)."""
    manifest = _read_manifest(store_dir)
    manifest["summary"] = summary
    write_json_atomic(os.path.join(store_dir, "manifest.json"), manifest)


def compact_store(store_dir: str, *, shard_size: int = 4096) -> list[str]:
    """Rewrite a store's shards into fewer, larger ones (e.g. after many resumed runs).

    Duplicates are dropped physically, skip records kept. Crash-safe: the new shards
    are committed first (readers then see every image twice and keep the old copy,
    which is identical), and the old shards are removed only afterwards. Do not run
    while an extraction writes to the same store, and reopen readers afterwards
    (they map shard files lazily, and the old files are gone).

    Returns:
        The names of the new shards.
    """
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
    _fsync_dir(os.path.join(os.fspath(store_dir), "shards"))
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
            config = _read_manifest(store_dir).get("config") or {}
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
