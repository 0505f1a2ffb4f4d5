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

__all__ = ["SegmentationError", "decode_segmentation", "encode_mask", "rle_counts",
           "segmentation_runs", "runs_box", "sample_runs"]

#: how far (in image sizes) polygon coordinates may reach outside the image: further
#: out, pycocotools' rasteriser allocates without bound (coordinates of 1e9 crash it)
POLYGON_MARGIN = 1.0


class SegmentationError(ValueError):
    """A segmentation that is not a valid COCO RLE or polygon list (the message says why)."""


def rle_counts(counts: str | bytes) -> np.ndarray:
    """Run lengths (int64) of a compressed COCO RLE string (``rleFrString``), checked;
    decoded with numpy (a mask's few hundred bytes in microseconds), exactly.

    Raises:
        SegmentationError: a character outside the code's 64 symbols, or a string
            that ends inside a number.
    """
    raw = counts.encode("ascii", "replace") if isinstance(counts, str) else bytes(counts)
    code = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if not len(code):
        return np.zeros(0, dtype=np.int64)
    outside = (code < 0) | (code >= 64)
    if outside.any():
        raise SegmentationError(f"compressed RLE has a byte {raw[int(np.argmax(outside))]:#04x} outside the code")
    more = (code & 0x20) != 0
    if more[-1]:
        raise SegmentationError("compressed RLE ends inside a run length")
    ends = np.flatnonzero(~more)
    starts = np.r_[0, ends[:-1] + 1]
    lengths = ends - starts + 1
    if lengths.max() > 12:  # a number of more than 60 bits (no image has such runs): exact ints
        return np.asarray(_rle_counts_exact(raw), dtype=object)
    shift = 5 * (np.arange(len(code)) - np.repeat(starts, lengths))
    values = np.add.reduceat((code & 0x1F) << shift, starts)
    values = np.where(code[ends] & 0x10, values - (np.int64(1) << (5 * lengths)), values)
    if len(values) * int(np.abs(values).max()) >= 1 << 62:  # a sum could leave int64: exact ints
        return np.asarray(_rle_counts_exact(raw), dtype=object)
    runs = values.copy()  # each run from the third on is stored relative to the one two before
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    return runs


def _rle_counts_exact(data: bytes) -> list[int]:
    """The same decode in Python integers (what a hostile string of huge runs gets)."""
    runs: list[int] = []
    p = 0
    while p < len(data):
        x, k, more = 0, 0, True
        while more:
            c = data[p] - 48
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


def _check_runs(runs, height: int, width: int) -> None:
    if isinstance(runs, np.ndarray) and runs.dtype == np.int64:
        if (runs < 0).any():
            raise SegmentationError("RLE has a negative run length")
        if (runs > height * width).any():  # so that the sum below stays inside int64
            raise SegmentationError(f"RLE has a run longer than the {width}x{height} image")
        total = int(runs.sum())
    else:
        if any(r < 0 for r in runs):
            raise SegmentationError("RLE has a negative run length")
        total = sum(int(r) for r in runs)
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


def _finite(value) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer of hundreds of digits
        return False


def _polygon_objects(polygons: list, height: int, width: int) -> list:
    if not polygons:
        raise SegmentationError("empty polygon list")
    x_low, x_high = -POLYGON_MARGIN * width, (1 + POLYGON_MARGIN) * width
    y_low, y_high = -POLYGON_MARGIN * height, (1 + POLYGON_MARGIN) * height
    for polygon in polygons:
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            raise SegmentationError("a polygon must be a flat list of x, y pairs, at least 3 points")
        if not all(_finite(v) for v in polygon):
            raise SegmentationError("polygon coordinates must be finite numbers")
        xs, ys = polygon[0::2], polygon[1::2]
        if min(xs) < x_low or max(xs) > x_high or min(ys) < y_low or max(ys) > y_high:
            raise SegmentationError(
                f"polygon coordinates reach x {min(xs):g}..{max(xs):g}, y {min(ys):g}..{max(ys):g}: "
                f"more than one image size outside the {width}x{height} image")
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


def segmentation_runs(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` -> its checked run lengths (int64, column-major,
    background first), without decoding a (height, width) mask: what
    :func:`sample_runs` and :func:`runs_box` read.

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
    runs = rle_counts(rle["counts"])
    _check_runs(runs, height, width)
    return np.asarray(runs, dtype=np.int64)


def sample_runs(runs: np.ndarray, height: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(len(ys), len(xs)) bool: the mask of ``runs`` (an image ``height`` pixels high)
    at the pixels (ys x xs); memory grows with the samples, not the image."""
    ends = np.cumsum(runs)
    linear = np.asarray(xs, dtype=np.int64)[None, :] * height + np.asarray(ys, dtype=np.int64)[:, None]
    return np.searchsorted(ends, linear, side="right") % 2 == 1


def runs_box(runs: np.ndarray, height: int) -> tuple[float, float, float, float] | None:
    """The (x1, y1, x2, y2) pixel box (exclusive end) of the mask of ``runs``, None
    when it covers no pixel."""
    ends = np.cumsum(runs)
    starts = ends - runs
    fore = (np.arange(len(runs)) % 2 == 1) & (runs > 0)
    if not fore.any():
        return None
    first, last = starts[fore], ends[fore] - 1
    col_first, col_last = first // height, last // height
    one_col = col_first == col_last
    y_low = np.where(one_col, first % height, 0).min()
    y_high = np.where(one_col, last % height, height - 1).max()
    return (float(col_first.min()), float(y_low), float(col_last.max() + 1), float(y_high + 1))


def encode_mask(mask: np.ndarray) -> dict:
    """(h, w) bool mask -> COCO compressed RLE ``{"size": [h, w], "counts": str}`` (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
