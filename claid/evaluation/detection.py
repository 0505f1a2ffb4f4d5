"""Class-agnostic detector recall under the conventions in use (PROTOCOLS.md sec. 3),
each under its own name:

- ``recall_vs_iou``: the paper's recall curve rule: a ground-truth object is
  recalled at threshold t when *any* predicted mask (or box) has IoU > t; no
  one-to-one matching; t = 0.1 ... 0.9.
- ``average_recall_greedy``: Detectron2 proposal recall: top-N proposals,
  greedy one-to-one matching, recall at IoU >= t for t = 0.5:0.05:0.95, AR = mean.
- ``cocoeval_ar`` (:mod:`claid.evaluation.cocoeval`): pycocotools COCOeval AR@N with
  ``useCats=0``, every category id rewritten to one so mismatched ids cannot silently give 0.
- ``corloc``: one box per image, correct when IoU >= 0.5 with any object.

Masks are (N, H, W) bool at the ground truth's resolution; boxes are
(x1, y1, x2, y2) pixels with an exclusive end.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from claid.evaluation.localization import pairwise_box_iou
from claid.masks import patch_mask_to_pixels
from claid.structures import Scores

__all__ = [
    "ANY_MATCH_THRESHOLDS",
    "GREEDY_THRESHOLDS",
    "pairwise_mask_iou",
    "patch_masks_to_pixels",
    "CocoMasks",
    "recall_vs_iou",
    "box_recall_vs_iou",
    "average_recall_greedy",
    "corloc",
    "detection_scores",
]

ANY_MATCH_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.arange(0.1, 0.95, 0.1), 2).tolist())
GREEDY_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2).tolist())


def pairwise_mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every mask in ``a`` (N, H, W) with every mask in ``b`` (M, H, W).

    Returns (N, M) float64; 0 where both masks are empty.
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.ndim != 3 or b.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got {a.shape} and {b.shape}")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(
            f"mask sizes differ: {a.shape[1:]} vs {b.shape[1:]}; bring predictions to the "
            "ground truth's resolution first (patch_masks_to_pixels)"
        )
    flat_a = a.reshape(a.shape[0], -1).astype(np.float32)
    flat_b = b.reshape(b.shape[0], -1).astype(np.float32)
    # float32 sums of 0/1 are exact up to 2**24 pixels per mask
    inter = (flat_a @ flat_b.T).astype(np.float64)
    union = flat_a.sum(1)[:, None] + flat_b.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def patch_masks_to_pixels(
    masks: np.ndarray,
    *,
    patch_size: int,
    scale: tuple[float, float],
    image_size: tuple[int, int],
) -> np.ndarray:
    """Patch-level masks (R, h, w) -> original-image masks (R, H, W) bool.

    ``scale`` (sy, sx) is original / resized pixels, so one patch cell covers
    (P * sy, P * sx) original pixels; the mapping is ``claid.masks.patch_mask_to_pixels``
    (pixel (y, x) lies in patch (floor(y / (P sy)), floor(x / (P sx))); pixels past
    the grid, the border the backbone cropped off, are False).
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (R, h, w), got {masks.shape}")
    return patch_mask_to_pixels(masks, (patch_size * scale[0], patch_size * scale[1]), image_size)


class CocoMasks(Mapping):
    """Ground-truth instance masks of a COCO annotation file, decoded lazily.

    Maps ``prefix + file_name`` (e.g. prefix "val2017/" to match a benchmark's
    image ids) to (K, H, W) bool masks; all val2017 masks at once would not fit
    in memory. ``include_crowd`` keeps crowd regions as objects, as the paper's
    recall-curve code does on val2017.
    """

    def __init__(
        self, annotation_file: str, *, include_crowd: bool = True, prefix: str = ""
    ) -> None:
        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):
            self.coco = COCO(annotation_file)
        self.include_crowd = include_crowd
        self._by_name = {
            prefix + img["file_name"]: img for img in self.coco.dataset.get("images", [])
        }

    def __getitem__(self, file_name: str) -> np.ndarray:
        image = self._by_name[file_name]
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image["id"]]))
        if not self.include_crowd:
            anns = [a for a in anns if not a.get("iscrowd", 0)]
        masks = np.zeros((len(anns), image["height"], image["width"]), dtype=bool)
        for i, ann in enumerate(anns):
            masks[i] = self.coco.annToMask(ann).astype(bool)
        return masks

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)


def _pairwise(pred: np.ndarray, gt: np.ndarray, kind: str) -> np.ndarray:
    if kind == "mask":
        return pairwise_mask_iou(pred, gt)
    if kind == "box":
        return pairwise_box_iou(pred, gt, iou="standard")
    raise ValueError(f"unknown kind {kind!r}; expected 'mask' or 'box'")


def recall_vs_iou(
    pred: Mapping[str, np.ndarray],
    gt: Mapping[str, np.ndarray],
    *,
    thresholds: Sequence[float] = ANY_MATCH_THRESHOLDS,
    kind: str = "mask",
) -> dict[float, float]:
    """The paper's any-match recall curve.

    Args:
        pred: image id -> predicted masks (R, H, W) or boxes (R, 4).
        gt: image id -> ground-truth masks (K, H, W) or boxes (K, 4); every
            image of ``gt`` is scored, images missing from ``pred`` count as
            having no prediction.
        thresholds: IoU thresholds t; an object counts at t when max IoU > t.
        kind: "mask" or "box".
    Returns:
        threshold -> recall (fraction of ground-truth objects), in [0, 1].
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    best: list[np.ndarray] = []
    for image_id, gt_items in gt.items():
        gt_items = np.asarray(gt_items)
        if gt_items.shape[0] == 0:
            continue
        pred_items = pred.get(image_id)
        if pred_items is None or np.asarray(pred_items).shape[0] == 0:
            best.append(np.zeros(gt_items.shape[0]))
            continue
        best.append(_pairwise(np.asarray(pred_items), gt_items, kind).max(axis=0))
    if not best:
        raise ValueError("the ground truth holds no object: recall is undefined")
    best_iou = np.concatenate(best)
    return {float(t): float((best_iou > t).mean()) for t in np.round(thresholds, 6)}


def box_recall_vs_iou(
    pred_boxes: Mapping[str, np.ndarray],
    gt_boxes: Mapping[str, np.ndarray],
    *,
    thresholds: Sequence[float] = ANY_MATCH_THRESHOLDS,
) -> tuple[np.ndarray, np.ndarray]:
    """The any-match recall curve on boxes, as two aligned arrays for plotting:
    ((T,) thresholds, (T,) recall). Same rule as ``recall_vs_iou(kind="box")``."""
    curve = recall_vs_iou(pred_boxes, gt_boxes, thresholds=thresholds, kind="box")
    return np.array(list(curve), dtype=np.float64), np.array(list(curve.values()))


def _greedy_overlaps(overlaps: np.ndarray) -> np.ndarray:
    """Detectron2's greedy one-to-one matching on a (N proposals, K gt) IoU
    matrix: repeatedly take the gt whose best remaining proposal overlaps most,
    record that IoU, remove both. Returns (K,) IoU per gt (0 if left unmatched)."""
    overlaps = overlaps.copy()
    n_gt = overlaps.shape[1]
    matched = np.zeros(n_gt)
    for _ in range(min(overlaps.shape[0], n_gt)):
        best_per_gt = overlaps.max(axis=0)
        best_proposal = overlaps.argmax(axis=0)
        gt_index = int(best_per_gt.argmax())
        matched[gt_index] = best_per_gt[gt_index]
        overlaps[best_proposal[gt_index], :] = -1
        overlaps[:, gt_index] = -1
    return matched


def average_recall_greedy(
    pred_boxes: Mapping[str, np.ndarray],
    gt_boxes: Mapping[str, np.ndarray],
    *,
    n: int = 100,
    thresholds: Sequence[float] = GREEDY_THRESHOLDS,
    without_predictions: str = "skip",
) -> dict:
    """Detectron2-style proposal recall AR@n (``_evaluate_box_proposals``).

    Args:
        pred_boxes: image id -> (R, 4) boxes, best first (only the first ``n``
            are used).
        gt_boxes: image id -> (K, 4) boxes (drop crowd boxes before, as
            Detectron2 does).
        n: proposals kept per image.
        thresholds: IoU thresholds; recall counts IoU >= t, compared in float32
            as Detectron2's torch code does.
        without_predictions: "skip" (Detectron2: an image with no proposal
            adds nothing, its objects are not counted) or "miss" (its objects
            count as not recalled).
    Returns:
        {"AR": mean recall over thresholds, "recall": {t: recall},
        "n_gt": objects counted, "n_images_skipped": images left out}.
    """
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if without_predictions not in ("skip", "miss"):
        raise ValueError(
            f"without_predictions must be 'skip' or 'miss', got {without_predictions!r}"
        )
    matched: list[np.ndarray] = []
    n_skipped = 0
    for image_id, gt in gt_boxes.items():
        gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
        if gt.shape[0] == 0:
            continue
        pred = pred_boxes.get(image_id)
        pred = np.zeros((0, 4)) if pred is None else np.asarray(pred, dtype=np.float64)
        pred = pred.reshape(-1, 4)[: int(n)]
        if pred.shape[0] == 0:
            if without_predictions == "skip":
                n_skipped += 1
            else:
                matched.append(np.zeros(gt.shape[0]))
            continue
        matched.append(_greedy_overlaps(pairwise_box_iou(pred, gt)))
    if not matched:
        raise ValueError(
            "no ground-truth box to score (none given, or no image with both boxes and "
            "predictions): average recall is undefined"
        )
    overlaps = np.concatenate(matched).astype(np.float32)
    thresholds = np.asarray(thresholds, dtype=np.float32)
    recall = {round(float(t), 6): float((overlaps >= t).sum() / overlaps.size) for t in thresholds}
    return {
        "AR": float(np.mean(list(recall.values()))),
        "recall": recall,
        "n_gt": int(overlaps.size),
        "n_images_skipped": n_skipped,
    }


def corloc(
    pred_boxes: Mapping[str, np.ndarray],
    gt_boxes: Mapping[str, np.ndarray],
    *,
    threshold: float = 0.5,
) -> float:
    """CorLoc: fraction of images with ground truth whose single predicted box
    has IoU >= threshold with any ground-truth box (no prediction = miss).

    Args:
        pred_boxes: image id -> (4,) or (1, 4) box.
        gt_boxes: image id -> (K, 4) boxes.
    """
    hits = []
    for image_id, gt in gt_boxes.items():
        gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
        if gt.shape[0] == 0:
            continue
        pred = pred_boxes.get(image_id)
        if pred is None or np.asarray(pred).size == 0:
            hits.append(False)
            continue
        pred = np.asarray(pred, dtype=np.float64).reshape(-1, 4)
        if pred.shape[0] != 1:
            raise ValueError(
                f"CorLoc takes one box per image; image {image_id!r} has {pred.shape[0]}"
            )
        hits.append(bool((pairwise_box_iou(pred, gt) >= threshold).any()))
    if not hits:
        raise ValueError("no image has a ground-truth box: CorLoc is undefined")
    return float(np.mean(hits))


def detection_scores(
    *,
    recall_curve: dict[float, float] | None = None,
    recall_kind: str = "mask",
    greedy: dict | None = None,
    greedy_n: int = 100,
    cocoeval: dict[str, float] | None = None,
    cocoeval_iou_type: str = "bbox",
    corloc_value: float | None = None,
    settings: dict | None = None,
) -> Scores:
    """Gather detector results into one labelled ``Scores`` (protocol "detection").

    Keys: ``recall-anymatch-<kind>-iou<t>`` (IoU > t), ``AR-greedy-<n>``,
    ``cocoeval-<iou_type>-<name>`` (useCats=0), ``CorLoc``.
    """
    values: dict[str, float] = {}
    record: dict = dict(settings or {})
    if recall_curve is not None:
        for t, r in recall_curve.items():
            values[f"recall-anymatch-{recall_kind}-iou{t:g}"] = float(r)
        record["recall-anymatch"] = "an object counts when any prediction has IoU > t"
    if greedy is not None:
        values[f"AR-greedy-{int(greedy_n)}"] = float(greedy["AR"])
        record["AR-greedy"] = {
            "rule": "Detectron2 greedy one-to-one, IoU >= t, top-N proposals",
            "thresholds": sorted(greedy["recall"]),
            "n_gt": greedy.get("n_gt"),
            "n_images_skipped_without_predictions": greedy.get("n_images_skipped"),
        }
    if cocoeval is not None:
        for name, value in cocoeval.items():
            values[f"cocoeval-{cocoeval_iou_type}-{name}"] = float(value)
        record["cocoeval"] = "pycocotools COCOeval, useCats=0, one category"
    if corloc_value is not None:
        values["CorLoc"] = float(corloc_value)
        record["CorLoc"] = "one box per image, IoU >= 0.5 with any object"
    if not values:
        raise ValueError("detection_scores got no result to gather")
    return Scores(protocol="detection", values=values, settings=record)
