"""Writing a region store: :func:`ensure_store` (the manifest), :class:`RegionStoreWriter`
(atomically committed shards, one writer per rank) and :func:`write_summary`.
Why a crash never leaves a shard a reader accepts: :mod:`claid.store.format`."""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import uuid

import numpy as np
from pycocotools import mask as mask_utils

from claid._version import __version__ as CLAID_VERSION
from claid.artifacts import (
    atomic_write_json,
    clean_stale_temps,
    config_hash,
    disk_full_guard,
    fsync_dir,
    json_bytes,
    npy_bytes,
    temp_path,
    write_synced,
)
from claid.checksums import bytes_record
from claid.store.format import (
    FORMAT_NAME,
    REGION_DTYPE,
    SCHEMA_VERSION,
    TOKEN_DTYPES,
    VECTOR_DTYPES,
    read_manifest,
)
from claid.store.shard_info import info_digest
from claid.structures import PatchGrid, RegionDescriptors


def save_npy_synced(path: str, array: np.ndarray) -> dict:
    """``np.save`` (never pickled) into a staging shard, fsynced; returns the file's
    ``{"size", "sha256"}`` record for shard.json."""
    payload = npy_bytes(array)
    write_synced(path, payload)
    return bytes_record(payload)


def _create_exclusively(path: str, payload: bytes) -> None:
    """Create ``path`` holding ``payload`` unless it exists; when several processes
    try at once exactly one version wins.

    A hard link of a fully written temporary is atomic (readers never see a partial
    file); on filesystems without hard links (some FUSE, SMB, object-store mounts)
    ``os.link`` fails with another error and the file is created with
    ``O_CREAT | O_EXCL`` and written in one call instead.
    """
    tmp = temp_path(path)
    write_synced(tmp, payload)
    try:
        os.link(tmp, path)  # fails if another rank created it first
        return
    except FileExistsError:
        return
    except OSError:
        pass  # no hard links here: exclusive create below
    finally:
        tmp.unlink(missing_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_manifest_when_written(store_dir: str, wait_s: float = 10.0) -> dict:
    """read_manifest, allowing a racing creator without hard links a moment to
    finish writing (its exclusive create is visible before its content)."""
    import json
    import time

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return read_manifest(store_dir)
        except json.JSONDecodeError:  # an empty / partial manifest: its creator is writing
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def ensure_store(store_dir: str, *, config: dict, dim: int, dtype: str = "float16") -> None:
    """Create the store's manifest, or check that the existing one matches.

    Safe to call from several ranks at once: the manifest is created with an
    exclusive link (or, without hard links, an exclusive create), so exactly one
    version wins and the others are checked against it.

    Raises:
        ValueError: the existing store was made with another config, dim or dtype.
    """
    if dtype not in VECTOR_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(VECTOR_DTYPES)}, got {dtype!r}")
    store_dir = os.fspath(store_dir)
    os.makedirs(store_dir, exist_ok=True)
    path = os.path.join(store_dir, "manifest.json")
    manifest = {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "claid_version": CLAID_VERSION,
        "config": config,
        "config_hash": config_hash(config),
        "dim": int(dim),
        "dtype": dtype,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if not os.path.exists(path):
        _create_exclusively(path, json_bytes(manifest))
        fsync_dir(store_dir)
    existing = _read_manifest_when_written(store_dir)
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
        if dtype not in VECTOR_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(VECTOR_DTYPES)}, got {dtype!r}")
        if token_dtype not in TOKEN_DTYPES:
            raise ValueError(f"token_dtype must be one of {sorted(TOKEN_DTYPES)}, "
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
        # a crashed writer's staging dirs, never a live one's (another rank or run)
        clean_stale_temps(self._staging_root)
        # after every existing shard (store order = name order = commit order), also
        # when earlier shards were removed by compaction
        seqs = [int(n.split("-", 1)[0]) for n in os.listdir(self._shard_root)
                if n.split("-", 1)[0].isdigit()]
        self._seq = max(seqs, default=-1) + 1
        self._reset_buffer()
        self.committed_shards: list[str] = []

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
                                           dtype=TOKEN_DTYPES[self.token_dtype]))
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
        self._vectors.append(vectors.astype(VECTOR_DTYPES[self.dtype]))
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
        """Commit the buffered images as one shard; returns its name (None if empty).

        A full disk raises :class:`claid.artifacts.DiskFullError` naming the file; the
        half-written shard is removed and the images stay buffered, so a retry after
        freeing space loses nothing."""
        if not self.buffered_images:
            return None
        name = f"{self._seq:06d}-r{self.rank:03d}-{uuid.uuid4().hex[:8]}"
        # named after this process (claid.artifacts.temp_path): only a dead writer's is cleaned
        staging = os.fspath(temp_path(os.path.join(self._staging_root, name)))
        try:
            with disk_full_guard(staging):
                os.makedirs(staging)
                self._write_shard(staging, name)
        except Exception:
            # a half-written shard is never committed; do not leave it filling the disk
            # (a kill leaves it to the next writer's cleanup of dead writers' temporaries)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        os.replace(staging, os.path.join(self._shard_root, name))  # the commit
        fsync_dir(self._shard_root)
        self._seq += 1
        self.committed_shards.append(name)
        self._reset_buffer()
        return name

    def _write_shard(self, staging: str, name: str) -> None:
        """Write and sync the buffered images' files into folder ``staging``, each
        recorded (size + sha256) in shard.json, which is written last."""
        regions = (np.concatenate(self._regions) if self._regions
                   else np.zeros(0, dtype=REGION_DTYPE))
        vectors = (np.concatenate(self._vectors) if self._vectors
                   else np.zeros((0, self.dim), dtype=VECTOR_DTYPES[self.dtype]))
        files = {  # size + sha256 of every file, checked when the store is opened / verified
            "regions.npy": save_npy_synced(os.path.join(staging, "regions.npy"), regions),
            "vectors.npy": save_npy_synced(os.path.join(staging, "vectors.npy"), vectors),
        }
        masks = b"".join(self._masks)
        write_synced(os.path.join(staging, "masks.rle"), masks)
        files["masks.rle"] = bytes_record(masks)
        if self._tokens:
            files["tokens.npy"] = save_npy_synced(os.path.join(staging, "tokens.npy"),
                                                  np.concatenate(self._tokens))
        # whole-image vectors only when every image of the shard has one
        has_whole = all(w is not None for w in self._whole)
        if has_whole:
            whole = (np.stack(self._whole) if self._whole else np.zeros((0, self.dim)))
            files["whole.npy"] = save_npy_synced(os.path.join(staging, "whole.npy"),
                                                 whole.astype(VECTOR_DTYPES[self.dtype]))
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
            "files": files,
        }
        info["info_sha256"] = info_digest(info)  # same-size edits of shard.json are found
        # shard.json last: a staging dir without it is unmistakably incomplete.
        write_synced(os.path.join(staging, "shard.json"), json_bytes(info))
        fsync_dir(staging)

    def discard(self) -> None:
        """Drop the buffer without committing (after a failure)."""
        self._reset_buffer()


def write_summary(store_dir: str, summary: dict) -> None:
    """Record the summary of an extraction run in the manifest (atomic rewrite)."""
    manifest = read_manifest(store_dir)
    manifest["summary"] = summary
    atomic_write_json(os.path.join(store_dir, "manifest.json"), manifest)

