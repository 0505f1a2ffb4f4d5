"""Network outputs cached per image, so a sweep over the cutter runs no network again.

Two kinds, each its own folder under the run cache, named by what produced it:

- ``tokens-<hash>/``: the detector backbone's PatchGrid of every image, keyed by
  (database images, backbone config). Every cutter variant (tau1, tau2, alpha, init,
  ncut, fixed depth) cuts these same tokens.
- ``featuremaps-<hash>/``: the region descriptor's (C, h', w') feature map of every
  image, keyed by (database images, region-descriptor settings). Pooling a new cut's
  regions from it gives exactly the vectors a forward would (float32).

Layout of one cache folder (schema ``SCHEMA_VERSIONS["feature_cache"]``)::

    cache.json          {"schema_version", "kind", "key", "dtype", "geometry", "claid_version"}
    items/<sha>.npz     one image: "image_id" and, for tokens, "tokens" (N, D), "grid",
                        "patch_size", "scale", "image_size"; for feature maps, "map"
                        (C, h', w'), "scale" (original pixels per input pixel), "image_size"
    items/<sha>.skip.json  {"image_id", "reason"}: the image could not be used

``<sha>`` is the first 24 hex digits of the SHA-1 of the image id (ids may hold
slashes). Every file is written atomically (``claid.artifacts``), one per image, so
a killed run keeps every image it finished and concurrent ranks never write the
same file. ``geometry`` holds what pooling needs besides the maps (a CNN's stride),
so that a descriptor can pool cached maps without building its network.

A :class:`FeatureCache` holds only paths and small dicts: it pickles into the
decoding workers, which read the per-image files themselves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from claid._version import __version__
from claid.artifacts import DamagedArtifactError, atomic_save_npz, atomic_write_json, schema_version
from claid.structures import PatchGrid

__all__ = ["FEATURE_KINDS", "FeatureCache"]

log = logging.getLogger(__name__)

#: kind -> folder prefix
FEATURE_KINDS = {"tokens": "tokens", "feature_maps": "featuremaps"}
_DTYPES = {"float16": np.float16, "float32": np.float32}
_MANIFEST = "cache.json"


#: the arrays of one item, per kind
_MEMBERS = {"tokens": ("image_id", "tokens", "grid", "patch_size", "scale", "image_size"),
            "feature_maps": ("image_id", "map", "scale", "image_size")}


def _item_problem(kind: str, arrays: dict, image_id: str) -> str | None:
    """What is wrong with one item's arrays (None when they are usable)."""
    missing = [name for name in _MEMBERS[kind] if name not in arrays]
    if missing:
        return f"no {missing[0]!r} array"
    if arrays["image_id"].shape != () or str(arrays["image_id"]) != image_id:
        return f"holds {str(arrays['image_id'])[:80]!r}, not {image_id!r}"
    scale, size = arrays["scale"], arrays["image_size"]
    if scale.shape != (2,) or not (np.isfinite(scale).all() and (scale > 0).all()):
        return f"scale {scale.tolist()!r:.60} is not two positive numbers"
    if size.shape != (2,) or size.dtype.kind not in "iu" or not (size > 0).all():
        return f"image_size {size.tolist()!r:.60} is not two positive integers"
    values = arrays["tokens"] if kind == "tokens" else arrays["map"]
    if values.dtype.kind != "f" or not np.isfinite(values).all():
        return f"{'tokens' if kind == 'tokens' else 'map'} {values.dtype} holds non-finite values"
    if kind == "feature_maps":
        return None if values.ndim == 3 else f"map of shape {values.shape}, not (C, h, w)"
    grid, patch = arrays["grid"], arrays["patch_size"]
    if grid.shape != (2,) or grid.dtype.kind not in "iu" or (grid < 1).any() or patch.shape != () or patch < 1:
        return f"grid {grid.tolist()!r:.40} / patch_size {patch.tolist()!r:.20} are not positive integers"
    if values.ndim != 2 or values.shape[0] != int(grid[0]) * int(grid[1]):
        return f"tokens of shape {values.shape} for a {grid.tolist()} grid"
    return None


def _item_name(image_id: str) -> str:
    return hashlib.sha1(image_id.encode("utf-8")).hexdigest()[:24]


class FeatureCache:
    """One cache folder of per-image network outputs (created, or opened and checked).

    Args:
        directory: the folder (``<cache>/tokens-<hash>`` or ``featuremaps-<hash>``).
        kind: ``tokens`` or ``feature_maps``.
        key: what produced the outputs (recorded; an existing folder with another key
            is refused).
        dtype: ``float32`` (what the network produced, bit for bit) or ``float16``
            (half the disk; pooling and cuts then see rounded values).
        geometry: what pooling needs besides the maps (e.g. ``{"stride": 32}``);
            None when unknown yet (a folder that records it keeps it).
    Raises:
        ValueError: bad kind or dtype; the folder holds another kind, key, dtype or an
            unknown schema version.
    """

    def __init__(self, directory: str | os.PathLike, *, kind: str, key: dict,
                 dtype: str = "float32", geometry: dict | None = None) -> None:
        if kind not in FEATURE_KINDS:
            raise ValueError(f"feature cache kind must be one of {sorted(FEATURE_KINDS)}, "
                             f"got {kind!r}")
        if dtype not in _DTYPES:
            raise ValueError(f"feature cache dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        self.directory = str(directory)
        self.kind = kind
        self.dtype = dtype
        manifest_path = Path(directory) / _MANIFEST
        wanted = {"schema_version": schema_version("feature_cache"), "kind": kind,
                  "key": json.loads(json.dumps(key)), "dtype": dtype}
        if manifest_path.exists():
            found = self._read_manifest(manifest_path)
            for name, value in wanted.items():
                if found.get(name) != value:
                    raise ValueError(f"feature cache {directory}: cache.json has {name}="
                                     f"{found.get(name)!r}, this run needs {value!r}")
            self.geometry = dict(found.get("geometry") or {})
            if geometry and not self.geometry:
                self.set_geometry(geometry)
        else:
            (Path(directory) / "items").mkdir(parents=True, exist_ok=True)
            self.geometry = dict(geometry or {})
            atomic_write_json(manifest_path, {**wanted, "geometry": self.geometry,
                                              "claid_version": __version__})

    @staticmethod
    def _read_manifest(path: Path) -> dict:
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"feature cache {path}: unreadable cache.json ({err})") from None
        if manifest.get("schema_version") != schema_version("feature_cache"):
            raise ValueError(f"feature cache {path}: schema_version "
                             f"{manifest.get('schema_version')!r}, this claid reads "
                             f"{schema_version('feature_cache')}")
        return manifest

    def set_geometry(self, geometry: dict) -> None:
        """Record the pooling geometry (once; a different one is refused)."""
        geometry = json.loads(json.dumps(geometry))
        if self.geometry and self.geometry != geometry:
            raise ValueError(f"feature cache {self.directory} records geometry {self.geometry}, "
                             f"got {geometry}")
        if not self.geometry:
            path = Path(self.directory) / _MANIFEST
            manifest = self._read_manifest(path)
            manifest["geometry"] = geometry
            atomic_write_json(path, manifest)
            self.geometry = geometry

    # -- what is there

    def _path(self, image_id: str, suffix: str = ".npz") -> Path:
        return Path(self.directory) / "items" / f"{_item_name(image_id)}{suffix}"

    def has(self, image_id: str) -> bool:
        """Whether the output of ``image_id`` is cached and its file is whole: a zip
        that opens, names this image and holds this kind's arrays (a file cut short
        or overwritten counts as not cached, with a warning, so it is computed again
        and rewritten)."""
        path = self._path(image_id)
        if not path.exists():
            return False
        try:  # the file opened here, so that numpy cannot leak it when the zip is bad
            with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
                whole = (set(_MEMBERS[self.kind]) <= set(data.files)
                         and data["image_id"].shape == () and str(data["image_id"]) == image_id)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            whole = False
        if not whole:
            message = f"feature cache {path}: damaged, or not the output of {image_id!r}; computed again"
            warnings.warn(message, stacklevel=2)
            log.warning(message)
        return whole

    def skip_reason(self, image_id: str) -> str | None:
        """Why ``image_id`` could not be used, if recorded (else None)."""
        path = self._path(image_id, ".skip.json")
        if not path.exists():
            return None
        return str(json.loads(path.read_text())["reason"])

    def missing(self, image_ids: Iterable[str]) -> list[str]:
        """The ids neither cached nor recorded as skipped (what a run must compute)."""
        return [i for i in image_ids
                if not self._path(i, ".skip.json").exists() and not self.has(i)]

    def disk_bytes(self) -> int:
        """Bytes the folder takes (its files' sizes)."""
        return sum(p.stat().st_size for p in Path(self.directory).rglob("*") if p.is_file())

    # -- writing

    def skip(self, image_id: str, reason: str) -> None:
        """Record that ``image_id`` could not be used (a later output supersedes it)."""
        atomic_write_json(self._path(image_id, ".skip.json"),
                          {"image_id": image_id, "reason": str(reason)})

    def put_patch_grid(self, image_id: str, patch_grid: PatchGrid) -> None:
        """Cache one image's detector tokens (as ``dtype``)."""
        self._require("tokens")
        atomic_save_npz(self._path(image_id), image_id=np.array(image_id),
                        tokens=np.asarray(patch_grid.tokens, dtype=_DTYPES[self.dtype]),
                        grid=np.asarray(patch_grid.grid, np.int64),
                        patch_size=np.array(patch_grid.patch_size, np.int64),
                        scale=np.asarray(patch_grid.scale, np.float64),
                        image_size=np.asarray(patch_grid.image_size, np.int64))

    def put_feature_map(self, image_id: str, feature_map: torch.Tensor | np.ndarray,
                        scale: tuple[float, float], image_size: tuple[int, int]) -> None:
        """Cache one image's (C, h', w') descriptor map, with its (sy, sx) original
        pixels per input pixel and its (H, W) original size."""
        self._require("feature_maps")
        if isinstance(feature_map, torch.Tensor):
            feature_map = feature_map.detach().float().cpu().numpy()
        feature_map = np.asarray(feature_map)
        if feature_map.ndim != 3:
            raise ValueError(f"{image_id}: expected a (C, h, w) feature map, got {feature_map.shape}")
        atomic_save_npz(self._path(image_id), image_id=np.array(image_id),
                        map=feature_map.astype(_DTYPES[self.dtype]),
                        scale=np.asarray(scale, np.float64),
                        image_size=np.asarray(image_size, np.int64))

    # -- reading

    def _load(self, image_id: str) -> dict:
        path = self._path(image_id)
        try:
            with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except FileNotFoundError:
            raise KeyError(f"no cached {self.kind} for {image_id!r} in {self.directory}") from None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:  # incl. a bad CRC
            raise DamagedArtifactError(f"feature cache {path}: unreadable ({str(err)[:120]}); delete the "
                                       "file to recompute it") from None
        problem = _item_problem(self.kind, arrays, image_id)
        if problem:
            raise DamagedArtifactError(f"feature cache {path}: {problem}; delete the file to recompute it")
        return arrays

    def patch_grid(self, image_id: str) -> PatchGrid:
        """The cached PatchGrid of one image, float32 tokens."""
        self._require("tokens")
        data = self._load(image_id)
        return PatchGrid(tokens=data["tokens"].astype(np.float32),
                         grid=tuple(int(v) for v in data["grid"]),
                         patch_size=int(data["patch_size"]),
                         scale=tuple(float(v) for v in data["scale"]),
                         image_size=tuple(int(v) for v in data["image_size"]))

    def feature_map(self, image_id: str) -> tuple[torch.Tensor, tuple[float, float], tuple[int, int]]:
        """One image's cached map: ((C, h', w') float32 tensor, (sy, sx), (H, W))."""
        self._require("feature_maps")
        data = self._load(image_id)
        return (torch.from_numpy(data["map"].astype(np.float32)),
                tuple(float(v) for v in data["scale"]),
                tuple(int(v) for v in data["image_size"]))

    def _require(self, kind: str) -> None:
        if self.kind != kind:
            raise ValueError(f"feature cache {self.directory} holds {self.kind}, not {kind}")
