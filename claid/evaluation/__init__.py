"""Metrics and protocols: rankings, boxes and masks -> named numbers.

- ap.py            AP variants over one ranked relevance list (lab mAP-k / mAP-all,
                   GLDv2 AP@k, hits-normalised AP@k, trapezoid AP, mP@k)
- revisited.py     ROxford / RParis Easy, Medium, Hard ground truth
- protocols.py     evaluate(rankings, benchmark): the protocol dict -> Scores
- localization.py  IoU (standard / enclosing), the lab's mIoU, box-end quirk
- detection.py     detector recall: any-match curve, greedy AR@N, CorLoc
- cocoeval.py      pycocotools COCOeval AR@N / AP, class-agnostic
- baselines.py     chance level (shuffled rankings), global-descriptor baseline
- detection_stage.py   the run's detection scores (the report files: claid/report/)
- scores_out.py    Scores -> MLflow metric dict, atomic JSON

Every number carries its protocol and variant: ``Scores.protocol`` names the
family, the value key names the variant, ``Scores.settings`` says what was done.
"""

from claid.evaluation.ap import (
    gldv2_ap_at_k,
    hits_normalised_ap_at_k,
    lab_ap_all,
    lab_ap_at_k,
    metric_function,
    precision_at_k,
    relevance_vector,
    revisitop_precision_at_k,
    trapezoid_ap,
)
from claid.evaluation.cocoeval import boxes_to_coco_results, cocoeval_ar
from claid.evaluation.detection import (
    CocoMasks,
    average_recall_greedy,
    box_recall_vs_iou,
    corloc,
    detection_scores,
    pairwise_mask_iou,
    patch_masks_to_pixels,
    recall_vs_iou,
)
from claid.evaluation.localization import (
    PatchBoxes,
    best_iou_per_image,
    localization_miou,
    pairwise_box_iou,
    patch_boxes_to_pixels,
    score_localization,
)
from claid.evaluation.protocols import FAMILIES, RetrievalProtocol, evaluate, resolve_protocol
from claid.evaluation.revisited_settings import REVISITED_SETTINGS, revisited_ground_truth
from claid.evaluation.scores_out import read_scores_json, scores_to_metrics, write_scores_json

__all__ = [
    "FAMILIES",
    "REVISITED_SETTINGS",
    "CocoMasks",
    "PatchBoxes",
    "RetrievalProtocol",
    "average_recall_greedy",
    "best_iou_per_image",
    "box_recall_vs_iou",
    "boxes_to_coco_results",
    "cocoeval_ar",
    "corloc",
    "detection_scores",
    "evaluate",
    "gldv2_ap_at_k",
    "hits_normalised_ap_at_k",
    "lab_ap_all",
    "lab_ap_at_k",
    "localization_miou",
    "metric_function",
    "pairwise_box_iou",
    "pairwise_mask_iou",
    "patch_boxes_to_pixels",
    "patch_masks_to_pixels",
    "precision_at_k",
    "read_scores_json",
    "recall_vs_iou",
    "relevance_vector",
    "resolve_protocol",
    "revisited_ground_truth",
    "revisitop_precision_at_k",
    "score_localization",
    "scores_to_metrics",
    "trapezoid_ap",
    "write_scores_json",
]
