"""The detection stage of a run: the store's regions against the ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def region_offsets(store) -> np.ndarray:
    """(n_images + 1,) int64: the regions of image i are rows
    ``offsets[i]:offsets[i + 1]`` of the store (regions of one image are contiguous)."""
    counts = np.asarray(store.region_counts(), dtype=np.int64)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def boxes_by_image(store) -> dict[str, np.ndarray]:
    """image id -> (R_i, 4) float32 boxes of its regions (views of one array, grouped
    once through the offsets, not by scanning every region for every image)."""
    boxes = np.asarray(store.boxes(), dtype=np.float32).reshape(-1, 4)
    offsets = region_offsets(store)
    return {image_id: boxes[offsets[i] : offsets[i + 1]] for i, image_id in enumerate(store.image_ids)}


class StoreMasks:
    """image id -> (R, H, W) pixel masks of its regions, decoded on access (a
    read-only mapping, so a whole collection's masks never sit in memory)."""

    def __init__(self, store) -> None:
        self.store = store
        self.first_region = region_offsets(store)
        self.index = {image_id: i for i, image_id in enumerate(store.image_ids)}

    def get(self, image_id: str, default=None):
        if image_id not in self.index:
            return default
        i = self.index[image_id]
        rows = range(int(self.first_region[i]), int(self.first_region[i + 1]))
        if len(rows) == 0:
            return np.zeros((0, 1, 1), bool)
        return np.stack([self.store.mask_pixels(r) for r in rows])

    def __getitem__(self, image_id: str):
        value = self.get(image_id)
        if value is None:
            raise KeyError(image_id)
        return value


def scores_dict(scores) -> dict:
    """A ``Scores`` as the plain dict the run report holds."""
    return {"protocol": scores.protocol, "values": scores.values, "settings": scores.settings}


@dataclass
class DetectionOutcome:
    """The detector against the ground truth: the scores (plain dicts as the run report
    holds them), the recall curve (``{"rule", "iou", "recall"}``, None without ground
    truth) and the flat metrics."""

    scores: list[dict]
    recall_vs_iou: dict | None
    metrics: dict[str, float]


def detection_stage(store, bench) -> DetectionOutcome:
    """The detector against the ground truth, every number named by its protocol:
    the lab's localisation mIoU (standard and enclosing IoU), the any-match recall
    curve (boxes; masks too when the dataset has mask annotations), greedy AR@100
    and CorLoc (the first, i.e. largest-scale, region of each image).

    Returns:
        the scores, the recall curve (masks over boxes when both exist) and the metrics.
    """
    from claid.evaluation.detection import (
        CocoMasks,
        average_recall_greedy,
        corloc,
        detection_scores,
        recall_vs_iou,
    )
    from claid.evaluation.localization import score_localization
    from claid.evaluation.scores_out import scores_to_metrics

    pred = boxes_by_image(store)
    scores = []
    curve_record = None
    if bench.gt_boxes:
        gt = {k: v for k, v in bench.gt_boxes.items() if k in pred or k in bench.database}
        scores += [score_localization(pred, gt, iou=kind) for kind in ("standard", "enclosing")]
        curve = recall_vs_iou(pred, gt, kind="box")
        first = {k: v[:1] for k, v in pred.items() if len(v)}
        scores.append(
            detection_scores(
                recall_curve=curve,
                recall_kind="box",
                greedy=average_recall_greedy(pred, gt, n=100),
                corloc_value=corloc(first, gt),
            )
        )
        curve_record = {"rule": "any-match (lab), boxes", "iou": list(curve), "recall": list(curve.values())}
    if bench.gt_masks_file:
        gt_masks = CocoMasks(bench.gt_masks_file, include_crowd=bool(bench.protocol.get("include_crowd", True)))
        gt_masks = {k: gt_masks[k] for k in store.image_ids if k in gt_masks}
        curve = recall_vs_iou(StoreMasks(store), gt_masks, kind="mask")
        scores.append(detection_scores(recall_curve=curve, recall_kind="mask"))
        curve_record = {"rule": "any-match (lab), masks", "iou": list(curve), "recall": list(curve.values())}
    return DetectionOutcome([scores_dict(s) for s in scores], curve_record, scores_to_metrics(scores))
