"""Localisation metrics: box IoU (standard and the lab's enclosing form), the
lab's retrieval-independent mIoU, and the conversion of region boxes from patch
units to pixels with or without the lab's box-end quirk.

Boxes are ``(x1, y1, x2, y2)`` with an exclusive end, in pixels of the original
image unless stated (claid/structures.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from claid.structures import Scores

__all__ = [
    "IOU_KINDS",
    "BOX_ENDS",
    "PatchBoxes",
    "pairwise_box_iou",
    "patch_boxes_to_pixels",
    "best_iou_per_image",
    "localization_miou",
    "score_localization",
]

IOU_KINDS: tuple[str, ...] = ("standard", "enclosing")
BOX_ENDS: tuple[str, ...] = ("exact", "lab")


def _as_boxes(boxes: np.ndarray, what: str) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim == 1 and boxes.shape[0] == 4:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what} must have shape (N, 4), got {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError(f"{what} holds NaN or infinite coordinates")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise ValueError(f"{what} has boxes with x2 < x1 or y2 < y1 (expected x1, y1, x2, y2)")
    return boxes


def pairwise_box_iou(a: np.ndarray, b: np.ndarray, *, iou: str = "standard") -> np.ndarray:
    """IoU of every box in ``a`` with every box in ``b``.

    Args:
        a: (N, 4) boxes; b: (M, 4) boxes (x1, y1, x2, y2, exclusive end).
        iou: "standard" (intersection / union) or "enclosing" (intersection /
            area of the smallest box enclosing both, as the lab's code computes
            it; A=(0,0,10,10), B=(5,5,15,15): standard 0.143, enclosing 0.111).
    Returns:
        (N, M) float64 in [0, 1]; 0 where the denominator is 0.
    """
    if iou not in IOU_KINDS:
        raise ValueError(f"unknown iou {iou!r}; expected one of {IOU_KINDS}")
    a = _as_boxes(a, "boxes a")
    b = _as_boxes(b, "boxes b")
    a_, b_ = a[:, None, :], b[None, :, :]
    inter_w = np.clip(
        np.minimum(a_[..., 2], b_[..., 2]) - np.maximum(a_[..., 0], b_[..., 0]), 0, None
    )
    inter_h = np.clip(
        np.minimum(a_[..., 3], b_[..., 3]) - np.maximum(a_[..., 1], b_[..., 1]), 0, None
    )
    inter = inter_w * inter_h
    if iou == "standard":
        area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
        area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        denominator = area_a[:, None] + area_b[None, :] - inter
    else:
        enclosing_w = np.maximum(a_[..., 2], b_[..., 2]) - np.minimum(a_[..., 0], b_[..., 0])
        enclosing_h = np.maximum(a_[..., 3], b_[..., 3]) - np.minimum(a_[..., 1], b_[..., 1])
        denominator = enclosing_w * enclosing_h
    return np.divide(inter, denominator, out=np.zeros_like(inter), where=denominator > 0)


@dataclass(frozen=True)
class PatchBoxes:
    """Region boxes of one image in patch units, with what maps them to pixels.

    Attributes:
        boxes: (R, 4) int, patch units, exclusive end (``RegionTree.boxes``).
        patch_size: P, side of a patch in network-input pixels.
        scale: (sy, sx) original pixels per network-input pixel (``PatchGrid.scale``).
        image_size: (height, width) of the original image, or None (no clipping).
    """

    boxes: np.ndarray
    patch_size: int
    scale: tuple[float, float] = (1.0, 1.0)
    image_size: tuple[int, int] | None = None


def patch_boxes_to_pixels(
    boxes: np.ndarray,
    *,
    patch_size: int,
    scale: tuple[float, float] = (1.0, 1.0),
    image_size: tuple[int, int] | None = None,
    box_end: str = "exact",
) -> np.ndarray:
    """Map (R, 4) patch-unit boxes (exclusive end) to (R, 4) float64 pixel boxes.

    box_end:
        "exact": the region ends at ``(max_index + 1) * P`` (= x2 * P), the
            correct form; clipped to ``image_size`` when given.
        "lab": the lab's code ends it at ``max_index * (P + 1)``, which
            overshoots right and bottom; start stays ``min_index * P``. Not
            clipped, since the overshoot is the quirk being reproduced
            (whether the lab clips afterwards is not verified).
    """
    if box_end not in BOX_ENDS:
        raise ValueError(f"unknown box_end {box_end!r}; expected one of {BOX_ENDS}")
    if int(patch_size) < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    boxes = _as_boxes(boxes, "patch boxes")
    sy, sx = scale
    p = float(patch_size)
    if box_end == "exact":
        pixels = boxes * p
    else:
        # max_index = exclusive end - 1
        pixels = np.concatenate([boxes[:, :2] * p, (boxes[:, 2:] - 1) * (p + 1)], axis=1)
    pixels = pixels * np.array([sx, sy, sx, sy])
    if box_end == "exact" and image_size is not None:
        height, width = image_size
        pixels = np.clip(pixels, 0, [width, height, width, height])
    return pixels


def best_iou_per_image(
    pred_boxes: Mapping[str, np.ndarray],
    gt_boxes: Mapping[str, np.ndarray],
    *,
    iou: str = "standard",
) -> dict[str, float]:
    """For every image with ground truth, the best IoU between any predicted box
    and any ground-truth box; 0 when the image has no prediction.

    Args:
        pred_boxes: image id -> (R, 4) pixel boxes (images missing count as R = 0).
        gt_boxes: image id -> (K, 4) pixel boxes; images with K = 0 are skipped.
    Returns:
        image id -> best IoU, for the images with at least one ground-truth box.
    """
    best: dict[str, float] = {}
    for image_id, gt in gt_boxes.items():
        gt = _as_boxes(gt, f"gt boxes of {image_id!r}")
        if gt.shape[0] == 0:
            continue
        pred = pred_boxes.get(image_id)
        if pred is None or np.asarray(pred).size == 0:
            best[image_id] = 0.0
            continue
        best[image_id] = float(pairwise_box_iou(pred, gt, iou=iou).max())
    return best


def localization_miou(
    pred_boxes: Mapping[str, np.ndarray],
    gt_boxes: Mapping[str, np.ndarray],
    *,
    iou: str = "standard",
) -> float:
    """The lab's localisation mIoU (independent of retrieval): mean over the
    reference images with ground truth of ``best_iou_per_image``."""
    best = best_iou_per_image(pred_boxes, gt_boxes, iou=iou)
    if not best:
        raise ValueError("no image has a ground-truth box: localisation mIoU is undefined")
    return float(np.mean(list(best.values())))


def score_localization(
    pred_boxes: Mapping[str, np.ndarray | PatchBoxes],
    gt_boxes: Mapping[str, np.ndarray],
    *,
    iou: str = "standard",
    box_end: str = "exact",
) -> Scores:
    """The lab's localisation mIoU as a labelled ``Scores`` (protocol "loc").

    Args:
        pred_boxes: image id -> region boxes, either (R, 4) pixel boxes or
            ``PatchBoxes`` (patch units, converted with ``box_end``).
            ``box_end="lab"`` needs ``PatchBoxes``: the quirk is defined on patch
            indices and cannot be recovered from pixel boxes.
        gt_boxes: image id -> (K, 4) pixel boxes.
        iou: "standard" or "enclosing".
        box_end: "exact" or "lab" (see ``patch_boxes_to_pixels``).
    Returns:
        Scores(protocol="loc", values={"mIoU-<iou>" (+ "-lab-box-end" for the
        quirk): value}, settings={what was done and counted}).
    """
    if box_end not in BOX_ENDS:
        raise ValueError(f"unknown box_end {box_end!r}; expected one of {BOX_ENDS}")
    pixels: dict[str, np.ndarray] = {}
    for image_id, boxes in pred_boxes.items():
        if isinstance(boxes, PatchBoxes):
            pixels[image_id] = patch_boxes_to_pixels(
                boxes.boxes,
                patch_size=boxes.patch_size,
                scale=boxes.scale,
                image_size=boxes.image_size,
                box_end=box_end,
            )
        elif box_end == "lab":
            raise ValueError(
                f"box_end='lab' needs PatchBoxes (patch units); image {image_id!r} has pixel boxes"
            )
        else:
            pixels[image_id] = _as_boxes(boxes, f"predicted boxes of {image_id!r}")
    best = best_iou_per_image(pixels, gt_boxes, iou=iou)
    if not best:
        raise ValueError("no image has a ground-truth box: localisation mIoU is undefined")
    name = f"mIoU-{iou}" + ("-lab-box-end" if box_end == "lab" else "")
    return Scores(
        protocol="loc",
        values={name: float(np.mean(list(best.values())))},
        settings={
            "definition": "per reference image with ground truth: best IoU between any "
            "region box and any gt box (0 if no region), averaged over those images",
            "iou": iou,
            "box_end": box_end,
            "n_images": len(best),
            "n_images_without_regions": sum(
                1 for i in best if i not in pixels or pixels[i].shape[0] == 0
            ),
            "n_predicted_images_without_gt": sum(1 for i in pixels if i not in best),
        },
    )
