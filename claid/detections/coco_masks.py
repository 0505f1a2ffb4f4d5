"""COCO segmentations checked before pycocotools sees them, and masks to and from RLE.

pycocotools' C decoder trusts its input: a compressed RLE whose run lengths do not
sum to ``height * width`` writes past the mask it allocates. A file from disk may
come from anyone, so every RLE is parsed here first (the same LEB128-style code as
``rleFrString`` in pycocotools' ``maskApi.c``) and refused unless its runs are
non-negative and cover the image exactly; only then is it decoded.
"""

from __future__ import annotations

import math

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["SegmentationError", "decode_segmentation", "encode_mask", "rle_counts"]


class SegmentationError(ValueError):
    """A segmentation that is not a valid COCO RLE or polygon list (the message says why)."""


def rle_counts(counts: str | bytes) -> list[int]:
    """Run lengths of a compressed COCO RLE string (``rleFrString``), checked.

    Raises:
        SegmentationError: a character outside the code's 64 symbols, or a string
            that ends inside a number.
    """
    data = counts.encode("ascii", "replace") if isinstance(counts, str) else bytes(counts)
    runs: list[int] = []
    p = 0
    while p < len(data):
        x, k, more = 0, 0, True
        while more:
            if p >= len(data):
                raise SegmentationError("compressed RLE ends inside a run length")
            c = data[p] - 48
            if not 0 <= c < 64:
                raise SegmentationError(f"compressed RLE has a byte {data[p]!r} outside the code")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def _check_runs(runs: list[int], height: int, width: int) -> None:
    if any(r < 0 for r in runs):
        raise SegmentationError("RLE has a negative run length")
    total = sum(runs)
    if total != height * width:
        raise SegmentationError(f"RLE runs cover {total} pixels, the {width}x{height} image has "
                                f"{height * width}")


def _rle_object(segmentation: dict, height: int, width: int) -> dict:
    """A checked RLE dict -> pycocotools' compressed form."""
    size = segmentation.get("size")
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)):
        raise SegmentationError(f"RLE size must be [height, width], got {size!r}")
    if (size[0], size[1]) != (height, width):
        raise SegmentationError(f"RLE size {list(size)} (height, width) does not match the image's "
                                f"{[height, width]}")
    counts = segmentation.get("counts")
    if isinstance(counts, list):  # uncompressed (iscrowd) RLE
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
            raise SegmentationError("uncompressed RLE counts must be integers")
        _check_runs(counts, height, width)
        return mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    if not isinstance(counts, (str, bytes)):
        raise SegmentationError(f"RLE counts must be a string or a list, got {type(counts).__name__}")
    _check_runs(rle_counts(counts), height, width)
    return {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def _polygon_objects(polygons: list, height: int, width: int) -> list:
    if not polygons:
        raise SegmentationError("empty polygon list")
    for polygon in polygons:
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            raise SegmentationError("a polygon must be a flat list of x, y pairs, at least 3 points")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   for v in polygon):
            raise SegmentationError("polygon coordinates must be finite numbers")
    return mask_utils.frPyObjects([[float(v) for v in p] for p in polygons], height, width)


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (RLE dict, compressed or not, or polygon list) ->
    (height, width) bool mask in original pixels.

    Raises:
        SegmentationError: malformed RLE or polygons, or an RLE of another size.
    """
    if isinstance(segmentation, dict):
        rle = _rle_object(segmentation, height, width)
    elif isinstance(segmentation, list):
        rle = mask_utils.merge(_polygon_objects(segmentation, height, width))
    else:
        raise SegmentationError(f"segmentation must be an RLE dict or a polygon list, got "
                                f"{type(segmentation).__name__}")
    return mask_utils.decode(rle).astype(bool)


def encode_mask(mask: np.ndarray) -> dict:
    """(h, w) bool mask -> COCO compressed RLE ``{"size": [h, w], "counts": str}`` (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
