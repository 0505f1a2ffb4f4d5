"""Box formats at the loader boundary.

claid uses one box convention inside: ``(x1, y1, x2, y2)`` in pixels of the
original image with an exclusive end. Every dataset format is converted here,
explicitly, and checked against the image it belongs to.
"""

from __future__ import annotations

import numpy as np


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(K, 4) ``x y w h`` (top-left corner, width, height) -> (K, 4) float32 ``x1 y1 x2 y2``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1).astype(np.float32)


def union_box(boxes: np.ndarray) -> tuple[float, float, float, float]:
    """The smallest box enclosing all (K, 4) ``x1 y1 x2 y2`` boxes, K >= 1."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(b) == 0:
        raise ValueError("union_box needs at least one box")
    return (
        float(b[:, 0].min()),
        float(b[:, 1].min()),
        float(b[:, 2].max()),
        float(b[:, 3].max()),
    )


def check_box(
    box, image_size: tuple[int, int] | None, *, where: str, tolerance: float = 1.0
) -> tuple[float, float, float, float]:
    """Validate one ``x1 y1 x2 y2`` box and return it as a float tuple.

    Args:
        box: four numbers.
        image_size: (height, width) of the image the box belongs to, or None to skip
            the bounds check.
        where: names the source in error messages, e.g. "queries.jsonl:3".
        tolerance: pixels a box may stick out of the image (annotation rounding);
            the returned box is clipped to the image.

    Raises:
        ValueError: not four finite numbers (booleans are refused), empty (x2 <= x1 or y2 <= y1), or
            outside the image by more than ``tolerance``.
    """
    if isinstance(box, str | bytes) or not hasattr(box, "__iter__"):
        raise ValueError(f"{where}: box {box!r:.80} is not a list of four numbers")
    if any(isinstance(v, bool | np.bool_) for v in box):
        # float(True) is 1.0: a JSON true/false is a mistake, never a coordinate
        raise ValueError(f"{where}: box {box!r:.80} holds true/false, not four numbers")
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError, OverflowError) as err:  # OverflowError: an integer of hundreds of digits
        raise ValueError(f"{where}: box {box!r:.80} is not a list of four numbers") from err
    if len(values) != 4 or not all(np.isfinite(values)):
        raise ValueError(f"{where}: box {box!r:.80} is not four finite numbers [x1, y1, x2, y2]")
    x1, y1, x2, y2 = values
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"{where}: box {box!r:.80} is empty (need x2 > x1 and y2 > y1)")
    if image_size is not None:
        h, w = image_size
        if x1 < -tolerance or y1 < -tolerance or x2 > w + tolerance or y2 > h + tolerance:
            raise ValueError(
                f"{where}: box {box!r:.80} lies outside the {w}x{h} (width x height) image"
            )
        x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h))
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"{where}: box {box!r:.80} does not overlap the {w}x{h} image")
    return (x1, y1, x2, y2)
