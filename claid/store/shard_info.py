"""A region store's ``shard.json`` and ``regions.npy`` checked field by field: what
:func:`claid.store.format.open_shard` (every open), ``python -m claid verify`` and a
run's reuse check (values too) refuse as a damaged shard.

The ranges are written once, in :data:`IMAGE_RULES` / :data:`SHARD_RULES` (rules
return None or what is wrong, the style of the settings' value rules); a shard that
breaks one is damaged (:class:`claid.artifacts.DamagedArtifactError` at open, moved to
``damaged/`` by a run, exit 1 from verify). ``info_sha256`` (written since it was
added; optional for older shards) is the sha256 of shard.json's canonical JSON
without itself: an edit of shard.json that keeps every value in range is found too.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable

import numpy as np

Rule = Callable[[object], "str | None"]

#: largest image side a shard may record (pixels)
MAX_SIDE = 1 << 17
#: how far a stored box may reach past its image (pixels; boxes are clipped when cut)
BOX_TOLERANCE_PX = 1.0


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _int_range(low: int, high: int | None = None) -> Rule:
    def rule(value):
        if _int(value) and value >= low and (high is None or value <= high):
            return None
        return f"must be an integer from {low}{'' if high is None else f' to {high}'}, got {value!r:.60}"
    return rule


def _pair(check: Callable[[object], bool], what: str, optional: bool = True) -> Rule:
    def rule(value):
        if value is None and optional:
            return None
        if isinstance(value, list) and len(value) == 2 and all(check(v) for v in value):
            return None
        return f"must be {'null or ' if optional else ''}a pair of {what}, got {value!r:.60}"
    return rule


def _text(value):
    return None if isinstance(value, str) and value else f"must be a non-empty string, got {value!r:.60}"


def _mapping_or_null(value):
    return None if value is None or isinstance(value, dict) else f"must be null or an object, got {value!r:.60}"


def _bool(value):
    return None if isinstance(value, bool) else f"must be true or false, got {value!r:.60}"


IMAGE_RULES: dict[str, tuple[bool, Rule]] = {  # field: (required, rule)
    "id": (True, _text),
    "height": (True, _int_range(1, MAX_SIDE)),
    "width": (True, _int_range(1, MAX_SIDE)),
    "n_regions": (True, _int_range(0)),
    "grid": (False, _pair(lambda v: _int(v) and 1 <= v <= MAX_SIDE, "positive integers")),
    "cell": (False, _pair(lambda v: _finite(v) and v > 0, "positive numbers")),
    "tokens": (False, _mapping_or_null),
}

SHARD_RULES: dict[str, tuple[bool, Rule]] = {
    "n_regions": (True, _int_range(0)),
    "n_images": (False, _int_range(0)),
    "rank": (False, _int_range(0)),
    "name": (False, _text),
    "dim": (False, _int_range(1)),
    "dtype": (False, lambda v: None if v in ("float16", "float32") else f"must be float16 or float32, got {v!r:.40}"),
    "whole": (False, _bool),
    "files": (False, _mapping_or_null),
    "info_sha256": (False, lambda v: None if isinstance(v, str) and len(v) == 64 else "must be a sha256 hex string"),
}


def _apply(rules: dict, record: dict, where: str) -> list[str]:
    problems = []
    for name, (required, rule) in rules.items():
        if name not in record:
            if required:
                problems.append(f"{where}: '{name}' missing")
            continue
        why = rule(record[name])
        if why:
            problems.append(f"{where}: '{name}' {why}")
    return problems


def info_digest(info: dict) -> str:
    """sha256 of shard.json's canonical JSON without ``info_sha256``."""
    body = {k: v for k, v in info.items() if k != "info_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def shard_info_problems(info: object, manifest: dict) -> list[str]:
    """What is wrong with a parsed shard.json (types, ranges, counts adding up, its
    own checksum); empty when every field is usable."""
    if not isinstance(info, dict):
        return ["shard.json is not a JSON object"]
    problems = _apply(SHARD_RULES, info, "shard.json")
    for key in ("images", "skipped"):
        if not isinstance(info.get(key), list):
            problems.append(f"shard.json: '{key}' missing or not a list")
    if problems:
        return problems
    for k, image in enumerate(info["images"]):
        if not isinstance(image, dict):
            problems.append(f"shard.json: images[{k}] is not an object")
            continue
        problems += _apply(IMAGE_RULES, image, f"shard.json: images[{k}]")
        if len(problems) > 5:
            return problems[:5] + ["..."]
    for k, skip in enumerate(info["skipped"]):
        if not (isinstance(skip, list) and len(skip) == 2 and all(isinstance(v, str) for v in skip)):
            problems.append(f"shard.json: skipped[{k}] must be [image id, reason], got {skip!r:.60}")
            break
    if problems:
        return problems
    if "n_images" in info and info["n_images"] != len(info["images"]):
        problems.append(f"shard.json: n_images {info['n_images']} but {len(info['images'])} images listed")
    for key in ("dim", "dtype"):
        if key in info and info[key] != manifest.get(key):
            problems.append(f"shard.json: {key} {info[key]!r} but the store's is {manifest.get(key)!r}")
    if sum(e["n_regions"] for e in info["images"]) != info["n_regions"]:
        problems.append("image region counts do not add up to n_regions")
    if "info_sha256" in info and info["info_sha256"] != info_digest(info):
        problems.append("shard.json: content differs from its recorded info_sha256 (altered after "
                        "it was written)")
    return problems


def region_problems(path: str, info: dict, regions: np.ndarray) -> list[str]:
    """What is wrong with the values of a shard's ``regions.npy`` (structured
    REGION_DTYPE rows) against its shard.json: image numbers in order and counts as
    listed, finite boxes inside their image, depths >= 0, parents inside their image,
    mask bytes inside ``masks.rle``. Reads the whole array (verify, reuse, export)."""
    images = info["images"]
    counts = np.asarray([e["n_regions"] for e in images], dtype=np.int64)
    expected = np.repeat(np.arange(len(images), dtype=np.int64), counts)
    if regions.shape != expected.shape:
        return [f"regions.npy has {regions.shape[0]} rows, shard.json counts {expected.shape[0]}"]
    problems = []
    image = np.asarray(regions["image"], dtype=np.int64)
    if not np.array_equal(image, expected):
        problems.append(f"regions.npy: image numbers disagree with shard.json at row "
                        f"{int(np.argmax(image != expected))}")
        return problems
    box = np.asarray(regions["box"], dtype=np.float64)
    sizes = np.asarray([[e["width"], e["height"]] for e in images], dtype=np.float64).reshape(-1, 2)[image]
    # a box drawn on the patch grid may reach one cell past the image's edge
    reach = np.asarray([max(e.get("cell") or [0.0]) + BOX_TOLERANCE_PX for e in images],
                       dtype=np.float64)[image]
    finite = np.isfinite(box).all(axis=1)
    inside = (finite & (box[:, 0] < box[:, 2]) & (box[:, 1] < box[:, 3])
              & (box[:, :2] >= -reach[:, None]).all(axis=1)
              & (box[:, 2:] <= sizes + reach[:, None]).all(axis=1))
    if not inside.all():
        row = int(np.argmin(inside))
        problems.append(f"regions.npy row {row}: box {box[row].tolist()} is not a finite box inside "
                        f"its {int(sizes[row, 0])}x{int(sizes[row, 1])} image")
    depth = np.asarray(regions["depth"], dtype=np.int64)
    if (depth < 0).any():
        problems.append(f"regions.npy row {int(np.argmax(depth < 0))}: depth < 0")
    parent = np.asarray(regions["parent"], dtype=np.int64)
    bad = (parent < -1) | (parent >= counts[image])
    if bad.any():
        row = int(np.argmax(bad))
        problems.append(f"regions.npy row {row}: parent {int(parent[row])} is not a region of its image")
    masks_path = os.path.join(path, "masks.rle")
    size = os.path.getsize(masks_path) if os.path.isfile(masks_path) else 0
    offset = np.asarray(regions["mask_offset"], dtype=np.int64)
    length = np.asarray(regions["mask_length"], dtype=np.int64)
    bad = (offset < 0) | (length < 0) | (offset + length > size)
    if bad.any():
        row = int(np.argmax(bad))
        problems.append(f"regions.npy row {row}: mask bytes {int(offset[row])}+{int(length[row])} "
                        f"outside masks.rle ({size} bytes)")
    return problems
