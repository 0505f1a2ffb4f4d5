"""The detection stage of a run: the store's regions against the ground truth."""

from __future__ import annotations

import numpy as np


class StoreMasks:
    """image id -> (R, H, W) pixel masks of its regions, decoded on access (a
    read-only mapping, so a whole collection's masks never sit in memory)."""

    def __init__(self, store) -> None:
        self.store = store
        self.region_image = np.asarray(store.region_image())
        self.index = {image_id: i for i, image_id in enumerate(store.image_ids)}

    def get(self, image_id: str, default=None):
        if image_id not in self.index:
            return default
        rows = np.flatnonzero(self.region_image == self.index[image_id])
        if len(rows) == 0:
            return np.zeros((0, 1, 1), bool)
        return np.stack([self.store.mask_pixels(int(r)) for r in rows])

    def __getitem__(self, image_id: str):
        value = self.get(image_id)
        if value is None:
            raise KeyError(image_id)
        return value


def scores_dict(scores) -> dict:
    """A ``Scores`` as the plain dict the run report holds."""
    return {"protocol": scores.protocol, "values": scores.values, "settings": scores.settings}


def detection_stage(store, bench, report: dict) -> dict[str, float]:
    """The detector against the ground truth, every number named by its protocol:
    the lab's localisation mIoU (standard and enclosing IoU), the any-match recall
    curve (boxes; masks too when the dataset has mask annotations), greedy AR@100
    and CorLoc (the first, i.e. largest-scale, region of each image).

    Adds the scores and the recall curve to ``report``; returns the flat metrics.
    """
    from claid.evaluation.detection import (
        CocoMasks,
        average_recall_greedy,
        corloc,
        detection_scores,
        recall_vs_iou,
    )
    from claid.evaluation.localization import score_localization
    from claid.evaluation.report import scores_to_metrics

    region_image = np.asarray(store.region_image())
    boxes = np.asarray(store.boxes(), dtype=np.float32)
    pred = {image_id: boxes[region_image == i] for i, image_id in enumerate(store.image_ids)}
    scores = []
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
        report["recall_vs_iou"] = {"rule": "any-match (lab), boxes", "iou": list(curve), "recall": list(curve.values())}
    if bench.gt_masks_file:
        gt_masks = CocoMasks(bench.gt_masks_file, include_crowd=bool(bench.protocol.get("include_crowd", True)))
        gt_masks = {k: gt_masks[k] for k in store.image_ids if k in gt_masks}
        curve = recall_vs_iou(StoreMasks(store), gt_masks, kind="mask")
        scores.append(detection_scores(recall_curve=curve, recall_kind="mask"))
        report["recall_vs_iou"] = {"rule": "any-match (lab), masks", "iou": list(curve), "recall": list(curve.values())}
    report.setdefault("scores", []).extend(scores_dict(s) for s in scores)
    return scores_to_metrics(scores)
