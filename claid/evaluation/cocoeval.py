"""pycocotools' COCOeval, class-agnostic (``useCats=0``): proposal AR@N (and AP) of
boxes or masks, every category id rewritten to one so that mismatched ids cannot
silently give 0."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Mapping

import numpy as np

__all__ = ["boxes_to_coco_results", "cocoeval_ar"]


def boxes_to_coco_results(
    pred_boxes: Mapping[int, np.ndarray],
    pred_scores: Mapping[int, np.ndarray] | None = None,
) -> list[dict]:
    """COCO detection results from per-image x1y1x2y2 boxes.

    Args:
        pred_boxes: COCO image id -> (R, 4) boxes (pixels, exclusive end).
        pred_scores: COCO image id -> (R,) confidences; None means the boxes are
            already best first and get scores 1, 1 - 1/R, ... in that order.
    Returns:
        a list of {"image_id", "category_id": 1, "bbox": [x, y, w, h], "score"}.
    """
    results: list[dict] = []
    for image_id, boxes in pred_boxes.items():
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if pred_scores is None:
            scores = 1.0 - np.arange(boxes.shape[0]) / max(boxes.shape[0], 1)
        else:
            scores = np.asarray(pred_scores[image_id], dtype=np.float64).reshape(-1)
            if scores.shape[0] != boxes.shape[0]:
                raise ValueError(
                    f"image {image_id}: {boxes.shape[0]} boxes but {scores.shape[0]} scores"
                )
        for box, score in zip(boxes, scores):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    return results


def cocoeval_ar(
    results: list[dict],
    gt: str | dict,
    *,
    max_dets: int = 100,
    iou_type: str = "bbox",
) -> dict[str, float]:
    """Class-agnostic COCOeval (``useCats=0``).

    Every ground-truth and result category id is rewritten to a single
    category: a class-agnostic detector's id (often 1, or 0) rarely matches
    COCO's, and a run that filters by category then reports 0 without error.

    Args:
        results: COCO results ({"image_id", "bbox" [x, y, w, h] or
            "segmentation" (RLE), "score", "category_id" any}).
        gt: a COCO annotation file path or its loaded dict.
        max_dets: detections kept per image (highest scores) for ``AR-<max_dets>``
            and ``AP``; any integer >= 1.
        iou_type: "bbox" or "segm".
    Returns:
        {"AR-1", "AR-10", "AR-<max_dets>", "AP"}: COCOeval's numbers at IoU
        0.5:0.95 over pycocotools' "all" area range, each read at its own entry of
        ``params.maxDets = sorted({1, 10, max_dets})`` (the mean of
        ``eval["recall"]`` / ``eval["precision"]`` over their defined cells, as
        ``COCOeval.summarize`` computes them). ``summarize()``'s own ``stats[0]``
        reads AP at maxDets = 100 only and is -1 for any other ``max_dets``.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"unknown iou_type {iou_type!r}; expected 'bbox' or 'segm'")
    if isinstance(max_dets, bool) or not isinstance(max_dets, int | np.integer) or max_dets < 1:
        raise ValueError(f"max_dets must be an integer >= 1, got {max_dets!r}")
    max_dets = int(max_dets)
    if isinstance(gt, str):
        with open(gt) as f:
            gt = json.load(f)
    dataset = copy.deepcopy(gt)
    if not dataset.get("annotations"):
        raise ValueError("the ground truth holds no annotation: recall is undefined")
    for ann in dataset["annotations"]:
        ann["category_id"] = 1
    dataset["categories"] = [{"id": 1, "name": "object", "supercategory": "object"}]
    gt_image_ids = {img["id"] for img in dataset.get("images", [])}
    unknown = {r["image_id"] for r in results} - gt_image_ids
    if unknown:
        raise ValueError(
            f"{len(unknown)} result image id(s) are not in the ground truth, e.g. {sorted(unknown)[:3]}"
        )
    key = "bbox" if iou_type == "bbox" else "segmentation"
    missing = sum(1 for r in results if key not in r)
    if missing:
        raise ValueError(f"{missing} result(s) have no {key!r} field (iou_type={iou_type!r})")
    names = ["AR-1", "AR-10", f"AR-{int(max_dets)}", "AP"]
    if not results:
        # COCO.loadRes cannot take an empty list; no detection recalls nothing.
        return dict.fromkeys(names, 0.0)
    results = [dict(r, category_id=1) for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        evaluator.params.useCats = 0
        # COCOeval keeps maxDets[-1] detections per image and accumulates at every entry
        evaluator.params.maxDets = sorted({1, 10, max_dets})
        evaluator.evaluate()
        evaluator.accumulate()
    return {
        "AR-1": _coco_mean(evaluator, "recall", 1),
        "AR-10": _coco_mean(evaluator, "recall", 10),
        f"AR-{max_dets}": _coco_mean(evaluator, "recall", max_dets),
        "AP": _coco_mean(evaluator, "precision", max_dets),
    }


def _coco_mean(evaluator, kind: str, max_dets: int) -> float:
    """COCOeval.summarize's number for IoU 0.5:0.95, area "all", at ``max_dets``:
    the mean over the cells of ``eval[kind]`` that are defined (> -1), -1 when none."""
    params = evaluator.params
    area = params.areaRngLbl.index("all")
    m = params.maxDets.index(max_dets)
    # precision is [T, R, K, A, M], recall [T, K, A, M]
    values = evaluator.eval[kind][..., area, m]
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else -1.0
