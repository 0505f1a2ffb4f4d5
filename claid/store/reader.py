"""Reading a region store: :class:`RegionStore` (format in :mod:`claid.store.format`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from claid.artifacts import DamagedArtifactError
from claid.masks import patch_mask_to_pixels
from claid.store.format import (
    LEGACY_TOKEN_DTYPE,
    REGION_DTYPE,
    Shard,
    open_shard,
    read_manifest,
)
from claid.structures import PatchGrid, RegionDescriptors


class RegionStore:
    """Read-only view of a region store (see the module docstring for the format).

    Arrays are over all regions of all processed images, in store order; region ``i``
    belongs to image ``image_ids[region_image()[i]]``. Build one with
    :meth:`RegionStore.open`.
    """

    def __init__(self, store_dir: str, manifest: dict, shards: list[Shard],
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
        manifest = read_manifest(store_dir)
        shard_root = os.path.join(store_dir, "shards")
        names = sorted(
            name for name in (os.listdir(shard_root) if os.path.isdir(shard_root) else [])
            if not name.startswith(".") and os.path.isdir(os.path.join(shard_root, name))
        )
        seen: set[str] = set()
        shards: list[Shard] = []
        skipped: dict[str, str] = {}
        for name in names:
            shard = open_shard(os.path.join(shard_root, name), name, manifest)
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

    config_hash = property(lambda self: self.manifest["config_hash"])
    schema_version = property(lambda self: int(self.manifest["schema_version"]))

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

    def _region_keep(self, shard: Shard) -> np.ndarray | None:
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
        rows = self.whole_image_rows()
        if rows is None:
            return None
        # filled shard by shard: no list of parts beside the result
        out = np.empty(rows.shape, dtype=dtype or self.dtype)
        filled = 0
        for start, kept in rows.chunks():
            out[start : start + kept.shape[0]] = kept
            filled = start + kept.shape[0]
        if filled != out.shape[0]:
            raise ValueError(f"the shards hold {filled} whole-image vectors for "
                             f"{out.shape[0]} images")
        return out

    def whole_image_rows(self) -> WholeImageRows | None:
        """The whole-image descriptors as a view read shard by shard (never all in
        memory: 5M images x 768 in float16 would be 7 GiB), or None when some shard
        predates them."""
        if any(shard.whole is None for shard in self._shards):
            return None
        return WholeImageRows(self)

    def region_counts(self) -> np.ndarray:
        """(n_images,) int64 number of regions of each image."""
        return self._counts

    # -- masks

    def _locate(self, region: int) -> tuple[Shard, int, int]:
        """Global region index -> (shard, row in shard, global image index)."""
        if not 0 <= region < self.num_regions:
            raise IndexError(f"region {region} out of range [0, {self.num_regions})")
        image = int(np.searchsorted(self._first_region, region, side="right") - 1)
        within = region - int(self._first_region[image])
        shard = self._shards[int(self._image_shard[image])]
        return shard, int(self._image_row[image]) + within, image

    def vector(self, region: int) -> np.ndarray:
        """(dim,) stored vector of one region: one memory-mapped row, no shard copy."""
        shard, row, _ = self._locate(int(region))
        return np.asarray(shard.vectors[row])

    def _decode_mask(self, shard: Shard, row: int, image: int) -> np.ndarray:
        grid = self._grids[image]
        length = int(shard.regions["mask_length"][row])
        if grid is None or length == 0:
            raise ValueError(f"image {self.image_ids[image]!r} was stored without masks")
        offset = int(shard.regions["mask_offset"][row])
        path = os.path.join(shard.path, "masks.rle")
        if offset < 0 or length < 0 or offset + length > os.path.getsize(path):
            raise DamagedArtifactError(f"corrupt shard {shard.path}: region {row} has mask bytes "
                                       f"{offset}+{length}, outside masks.rle")
        with open(path, "rb") as f:
            f.seek(offset)
            counts = f.read(length)
        if len(counts) != length:  # never decode part of a mask
            raise ValueError(f"corrupt shard {shard.path}: masks.rle ends inside the mask of "
                             f"region {row}")
        from claid.detections.coco_masks import SegmentationError, decode_segmentation

        try:  # checked first: pycocotools writes past its mask on runs that do not add up
            return decode_segmentation({"size": [int(grid[0]), int(grid[1])], "counts": counts},
                                       int(grid[0]), int(grid[1]))
        except SegmentationError as err:
            raise DamagedArtifactError(f"corrupt shard {shard.path}: masks.rle, mask of region {row}: "
                                       f"{err}") from None

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
        return str(info.get("dtype", LEGACY_TOKEN_DTYPE))

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
            raise DamagedArtifactError(f"corrupt shard {shard.path}: tokens.npy ends "
                                       f"inside the tokens of {image_id!r}")
        return PatchGrid(
            tokens=np.asarray(rows, dtype=np.float32),
            grid=(h, w),
            patch_size=int(info["patch_size"]),
            scale=(float(info["scale"][0]), float(info["scale"][1])),
            image_size=tuple(int(v) for v in self._sizes[image]),
        )


class WholeImageRows:
    """A store's whole-image vectors, one row per image in ``image_ids`` order, read
    shard by shard from the memory-mapped shards: what a search table needs of an
    (n_images, dim) array (``shape``, ``dtype``, ``len``, ``chunks()``) without it."""

    def __init__(self, store: RegionStore) -> None:
        self.store = store
        self.shape = (store.num_images, store.dim)
        self.dtype = np.dtype(store.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first image index, (n_s, dim) stored dtype)`` shard by shard: the
        memory-mapped rows, or a copy of one shard's kept rows."""
        start = 0
        for shard in self.store._shards:
            rows = shard.whole if shard.image_keep.all() else np.asarray(shard.whole[shard.image_keep])
            yield start, rows
            start += int(rows.shape[0])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The whole (n_images, dim) array (small stores and tests)."""
        return self.store.whole_image_vectors(dtype)
