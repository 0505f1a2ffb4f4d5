"""The region store's on-disk format, and reading a manifest and a shard's headers.

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
                                       "skipped": [[image_id, reason], ...],
                                       "files": {<file name>: {"size", "sha256"}, ...}}
                                      ("files": every other file of the shard; absent in
                                      shards written before it; sizes are checked on
                                      every open, checksums on reuse and by
                                      ``python -m claid verify``)
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
      staging/                        shards being written, ``.<name>.tmp-<pid>-<host>-<random>``;
                                      never read; a writer removes only those whose process
                                      is gone (never another live run's or rank's)
      .lock                           the extraction lock (fcntl.flock): one run extracts
                                      into a store at a time, another waits and reuses
      ranks/r<rank>.json              each rank's account of the last extraction (images,
                                      timings, host), gathered into "summary" by rank 0
                                      (claid.engine.rank_reports); never read for regions

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

Tokens: stores written before the feature caches (``claid/engine/feature_cache.py``)
may hold every image's detector ``PatchGrid`` (``tokens.npy``; ``patch_grid``,
``has_tokens``, ``token_image_ids`` and :func:`find_token_store` still read them).
The extraction no longer writes or uses them: a cutter sweep reads the backbone's
tokens and the descriptor's maps from the feature caches, shared by every store.
"""

from __future__ import annotations

import json
import math
import os
import tokenize
from dataclasses import dataclass

import numpy as np

from claid.artifacts import DamagedArtifactError, schema_version

SCHEMA_VERSION = schema_version("region_store")
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
VECTOR_DTYPES = {"float16": np.float16, "float32": np.float32}
TOKEN_DTYPES = VECTOR_DTYPES  # same choice for the token cache
LEGACY_TOKEN_DTYPE = "float16"  # shards that predate the "dtype" key in tokens info


def read_manifest(store_dir: str) -> dict:
    """The manifest.json of ``store_dir``; ValueError when it is not a store of this
    format and schema version."""
    path = os.path.join(store_dir, "manifest.json")
    if not os.path.isfile(path):
        raise ValueError(f"{store_dir} is not a claid region store (no manifest.json)")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except RecursionError:
        raise DamagedArtifactError(f"{path}: damaged, nested deeper than the JSON reader allows") from None
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError, an integer too long
        raise DamagedArtifactError(f"{path}: damaged, not JSON ({str(err)[:200]})") from None
    if not isinstance(manifest, dict):
        raise DamagedArtifactError(f"{path}: damaged, not a JSON object")
    if manifest.get("format") != FORMAT_NAME:
        raise DamagedArtifactError(f"{path}: format is {manifest.get('format')!r}, not {FORMAT_NAME!r}")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: schema_version {manifest.get('schema_version')} but this claid reads "
            f"{SCHEMA_VERSION}; re-extract the regions or use a matching claid version"
        )
    from claid.artifacts import config_hash

    dim, dtype, config = manifest.get("dim"), manifest.get("dtype"), manifest.get("config")
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= 1 << 20:
        raise DamagedArtifactError(f"{path}: damaged, dim must be a positive integer, got {dim!r:.40}")
    if not isinstance(dtype, str) or dtype not in VECTOR_DTYPES:
        raise DamagedArtifactError(f"{path}: damaged, dtype must be one of {sorted(VECTOR_DTYPES)}, "
                                   f"got {dtype!r:.40}")
    if not isinstance(config, dict) or manifest.get("config_hash") != config_hash(config):
        raise DamagedArtifactError(f"{path}: damaged, its config does not hash to its config_hash "
                                   "(altered after it was written)")
    return manifest



@dataclass
class Shard:
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
            self._regions = np.load(os.path.join(self.path, "regions.npy"), mmap_mode="r", allow_pickle=False)
        return self._regions

    @property
    def vectors(self) -> np.ndarray:
        """(n, dim) memmap in the stored dtype."""
        if self._vectors is None:
            self._vectors = np.load(os.path.join(self.path, "vectors.npy"), mmap_mode="r", allow_pickle=False)
        return self._vectors

    @property
    def whole(self) -> np.ndarray | None:
        """(n_images_in_shard, dim) memmap of whole-image vectors, or None (older shard)."""
        if self._whole is None and self.info.get("whole"):
            self._whole = np.load(os.path.join(self.path, "whole.npy"), mmap_mode="r", allow_pickle=False)
        return self._whole

    @property
    def tokens(self) -> np.ndarray:
        """(sum of h*w, D_tok) memmap of the cached patch tokens, stored dtype."""
        if self._tokens is None:
            path = os.path.join(self.path, "tokens.npy")
            if not os.path.isfile(path):
                raise DamagedArtifactError(f"corrupt shard {self.path}: shard.json lists "
                                           "tokens but tokens.npy is missing")
            self._tokens = np.load(path, mmap_mode="r", allow_pickle=False)
        return self._tokens



def npy_header(path: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a .npy file from its header; checks that the data is all
    there (a truncated file is corrupt) without reading or mapping it."""
    with open(path, "rb") as f:
        try:  # the header is a Python literal: a damaged one fails in tokenize, ast or numpy
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        except (ValueError, TypeError, SyntaxError, tokenize.TokenError, OverflowError) as err:
            raise DamagedArtifactError(f"{os.path.basename(path)}: damaged .npy header "
                                       f"({str(err)[:120]})") from None
        data_start = f.tell()
    if dtype.hasobject or not all(isinstance(v, int) and v >= 0 for v in shape):
        raise DamagedArtifactError(f"{os.path.basename(path)}: header says {dtype} {shape}, not a plain array")
    expected = data_start + math.prod(shape) * dtype.itemsize
    if os.path.getsize(path) < expected:
        raise DamagedArtifactError(f"{os.path.basename(path)} is shorter than its header says")
    return tuple(shape), dtype


#: files every shard holds; a shard with file records must list them
REQUIRED_FILES = ("regions.npy", "vectors.npy", "masks.rle")


def shard_size_problems(path: str, info: dict, *, checksums: bool = False) -> list[str]:
    """What is wrong with a shard's files against the records in its shard.json
    (missing, truncated or grown; with ``checksums`` also altered content). A shard
    written before files were recorded has nothing to check (empty list)."""
    from claid.checksums import record_problems

    records = info.get("files")
    if records is None:
        return []
    if not isinstance(records, dict):
        return ["shard.json: files is not a mapping"]
    absent = [f"{name}: not recorded" for name in REQUIRED_FILES if name not in records]
    return absent + record_problems(path, records, checksums=checksums)


def open_shard(path: str, name: str, manifest: dict) -> Shard:
    from claid.store.shard_info import shard_info_problems

    try:
        with open(os.path.join(path, "shard.json"), encoding="utf-8") as f:
            info = json.load(f)
        regions_shape, regions_dtype = npy_header(os.path.join(path, "regions.npy"))
        vectors_shape, vectors_dtype = npy_header(os.path.join(path, "vectors.npy"))
    except RecursionError:
        raise DamagedArtifactError(f"corrupt shard {path}: shard.json nested deeper than the JSON "
                                   "reader allows") from None
    except (OSError, ValueError) as err:
        # Committed shards are complete by construction; this is damage after the fact.
        raise DamagedArtifactError(f"corrupt shard {path}: {str(err)[:300]}") from err
    if not isinstance(info, dict) or not {"n_regions", "images", "skipped"} <= set(info):
        raise DamagedArtifactError(f"corrupt shard {path}: shard.json lacks n_regions / images / skipped")
    problems = shard_info_problems(info, manifest)  # every field typed, in range
    if problems:
        raise DamagedArtifactError(f"corrupt shard {path}: " + "; ".join(problems))
    n = int(info["n_regions"])
    dim = int(manifest["dim"])
    problems = shard_size_problems(path, info)
    if info.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"schema_version {info.get('schema_version')}")
    if regions_dtype != REGION_DTYPE or regions_shape != (n,):
        problems.append(f"regions.npy {regions_dtype}{regions_shape} vs ({n},)")
    if vectors_shape != (n, dim) or vectors_dtype != np.dtype(manifest["dtype"]):
        problems.append(f"vectors.npy {vectors_dtype}{vectors_shape} vs ({n}, {dim})")
    if info.get("whole"):
        try:
            whole_shape, whole_dtype = npy_header(os.path.join(path, "whole.npy"))
        except (OSError, ValueError) as err:
            raise DamagedArtifactError(f"corrupt shard {path}: {err}") from err
        n_images = len(info["images"])
        if whole_shape != (n_images, dim) or whole_dtype != np.dtype(manifest["dtype"]):
            problems.append(f"whole.npy {whole_dtype}{whole_shape} vs ({n_images}, {dim})")
    if problems:
        raise DamagedArtifactError(f"corrupt shard {path}: " + "; ".join(problems))
    return Shard(name, path, info, np.ones(0, bool))

