"""Detector recall conventions on tiny masks and boxes computed by hand."""

import json

import numpy as np
import pytest

from claid.evaluation import (
    CocoMasks,
    average_recall_greedy,
    box_recall_vs_iou,
    boxes_to_coco_results,
    cocoeval_ar,
    corloc,
    detection_scores,
    pairwise_mask_iou,
    patch_masks_to_pixels,
    recall_vs_iou,
)
from claid.evaluation.detection import _greedy_overlaps


def _mask(rows, cols, size=(10, 10)):
    m = np.zeros(size, dtype=bool)
    m[rows[0] : rows[1], cols[0] : cols[1]] = True
    return m


def test_any_match_recall_curve_on_masks():
    gt = {
        "im1": np.stack([_mask((0, 5), (0, 5)), _mask((5, 10), (5, 10))]),  # 25 px each
        "im2": np.stack([_mask((0, 2), (0, 2))]),  # no prediction: a miss
    }
    pred = {
        "im1": np.stack(
            [
                _mask((0, 5), (0, 3)),  # 15 px inside gt 1: IoU 0.6
                _mask((5, 10), (8, 10)),  # 10 px inside gt 2: IoU 0.4
            ]
        )
    }
    curve = recall_vs_iou(pred, gt)
    assert list(curve) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert curve[0.3] == pytest.approx(2 / 3)
    assert curve[0.5] == pytest.approx(1 / 3)
    assert curve[0.7] == 0.0


def test_any_match_counts_one_prediction_for_several_objects_greedy_does_not():
    gt_boxes = {"im": np.array([[0, 0, 10, 10], [0, 0, 10, 11]], np.float32)}
    pred_boxes = {"im": np.array([[0, 0, 10, 10]], np.float32)}  # IoU 1.0 and 100/110
    curve = recall_vs_iou(pred_boxes, gt_boxes, kind="box")
    assert curve[0.5] == 1.0 and curve[0.9] == 1.0
    thresholds, recalls = box_recall_vs_iou(pred_boxes, gt_boxes)
    assert thresholds.shape == recalls.shape == (9,) and recalls[-1] == 1.0
    greedy = average_recall_greedy(pred_boxes, gt_boxes)
    assert greedy["AR"] == pytest.approx(0.5)  # one proposal matches one object only
    assert greedy["n_gt"] == 2


def test_any_match_is_strict_greedy_is_not():
    gt = {"im": np.stack([_mask((0, 4), (0, 5))])}  # 20 px
    pred = {"im": np.stack([_mask((0, 2), (0, 5))])}  # 10 px inside: IoU exactly 0.5
    assert recall_vs_iou(pred, gt, thresholds=[0.5])[0.5] == 0.0  # IoU > t
    gt_box = {"im": np.array([[0, 0, 10, 10]], np.float32)}
    half = {"im": np.array([[0, 0, 10, 5]], np.float32)}
    assert average_recall_greedy(half, gt_box)["recall"][0.5] == 1.0  # IoU >= t
    assert recall_vs_iou(half, gt_box, kind="box", thresholds=[0.5])[0.5] == 0.0


def test_greedy_matching_takes_the_largest_overlap_first():
    # rows: proposals, columns: objects. Greedy takes (p1, A) = 0.9 first, leaving
    # p2 for B (0.1), although p1-B 0.8 + p2-A 0.7 would be better.
    overlaps = np.array([[0.9, 0.8], [0.7, 0.1]])
    assert _greedy_overlaps(overlaps).tolist() == pytest.approx([0.9, 0.1])


def test_greedy_ar_thresholds_and_top_n_cut():
    gt = {"im": np.array([[0, 0, 10, 10]], np.float32)}
    # IoU 0.72 is recalled at 0.50 ... 0.70 (5 of 10 thresholds)
    partial = {"im": np.array([[0, 0, 10, 7.2]], np.float32)}
    assert average_recall_greedy(partial, gt)["AR"] == pytest.approx(0.5)
    late = {"im": np.array([[50, 50, 60, 60], [0, 0, 10, 10]], np.float32)}
    assert average_recall_greedy(late, gt, n=2)["AR"] == pytest.approx(1.0)
    assert average_recall_greedy(late, gt, n=1)["AR"] == 0.0
    assert average_recall_greedy({}, gt, without_predictions="miss")["AR"] == 0.0
    with pytest.raises(ValueError, match="no ground-truth box to score"):
        average_recall_greedy({}, gt)  # Detectron2 skips images without proposals


def test_greedy_ar_skips_images_without_proposals_like_detectron2():
    gt = {"found": np.array([[0, 0, 10, 10]]), "empty": np.array([[0, 0, 5, 5]])}
    pred = {"found": np.array([[0, 0, 10, 10]])}
    skip = average_recall_greedy(pred, gt)
    assert skip["AR"] == 1.0 and skip["n_gt"] == 1 and skip["n_images_skipped"] == 1
    miss = average_recall_greedy(pred, gt, without_predictions="miss")
    assert miss["AR"] == 0.5 and miss["n_gt"] == 2


def _coco_gt():
    return {
        "images": [
            {"id": 1, "file_name": "one.jpg", "width": 100, "height": 100},
            {"id": 2, "file_name": "two.jpg", "width": 100, "height": 100},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 3,
                "bbox": [10, 10, 30, 30],
                "area": 900,
                "iscrowd": 0,
                "segmentation": [[10, 10, 40, 10, 40, 40, 10, 40]],
            },
            {
                "id": 2,
                "image_id": 2,
                "category_id": 7,
                "bbox": [0, 0, 50, 50],
                "area": 2500,
                "iscrowd": 0,
                "segmentation": [[0, 0, 50, 0, 50, 50, 0, 50]],
            },
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }


def test_cocoeval_class_agnostic_ar_by_hand_despite_mismatched_category_ids():
    # image 1: exact box (IoU 1); image 2: [0, 0, 50, 36] -> IoU 0.72, recalled at 0.50..0.70
    results = boxes_to_coco_results(
        {1: np.array([[10, 10, 40, 40]]), 2: np.array([[0, 0, 50, 36]])}
    )
    results[1]["category_id"] = 999  # an id the ground truth does not have
    ar = cocoeval_ar(results, _coco_gt())
    assert ar["AR-100"] == pytest.approx((5 * 1.0 + 5 * 0.5) / 10)
    assert ar["AR-1"] == pytest.approx(0.75)


def test_cocoeval_reads_a_file_and_refuses_bad_input(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(_coco_gt()))
    exact = boxes_to_coco_results({1: np.array([[10, 10, 40, 40]]), 2: np.array([[0, 0, 50, 50]])})
    assert cocoeval_ar(exact, str(path))["AR-100"] == pytest.approx(1.0)
    assert cocoeval_ar([], str(path))["AR-100"] == 0.0
    with pytest.raises(ValueError, match="not in the ground truth"):
        cocoeval_ar(boxes_to_coco_results({5: np.array([[0, 0, 1, 1]])}), str(path))
    with pytest.raises(ValueError, match="max_dets"):
        cocoeval_ar(exact, str(path), max_dets=0)
    with pytest.raises(ValueError, match="segmentation"):
        cocoeval_ar(exact, str(path), iou_type="segm")


def test_the_hazard_the_relabelling_guards_against():
    """pycocotools with categories on and a class-agnostic id reports 0 without error."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = boxes_to_coco_results(
        {1: np.array([[10, 10, 40, 40]]), 2: np.array([[0, 0, 50, 50]])}
    )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = _coco_gt()
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[8] <= 0  # silently nothing recalled
    assert cocoeval_ar(results, _coco_gt())["AR-100"] == pytest.approx(1.0)


def test_cocoeval_segm_and_lazy_coco_masks(tmp_path):
    from pycocotools import mask as mask_utils

    path = tmp_path / "gt.json"
    gt = _coco_gt()
    gt["annotations"].append(
        {
            "id": 3,
            "image_id": 2,
            "category_id": 7,
            "bbox": [60, 60, 10, 10],
            "area": 100,
            "iscrowd": 1,
            "segmentation": [[60, 60, 70, 60, 70, 70, 60, 70]],
        }
    )
    path.write_text(json.dumps(gt))
    masks = CocoMasks(str(path))
    assert len(masks) == 2 and set(masks) == {"one.jpg", "two.jpg"}
    assert masks["two.jpg"].shape == (2, 100, 100)
    assert CocoMasks(str(path), include_crowd=False)["two.jpg"].shape == (1, 100, 100)
    assert set(CocoMasks(str(path), prefix="val2017/")) == {"val2017/one.jpg", "val2017/two.jpg"}
    one = masks["one.jpg"][0]
    assert one[25, 25] and not one[50, 50]
    rle = mask_utils.encode(np.asfortranarray(one.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    results = [{"image_id": 1, "category_id": 1, "segmentation": rle, "score": 1.0}]
    ar = cocoeval_ar(results, str(path), iou_type="segm")
    # one of the two non-crowd objects is found exactly; COCOeval ignores crowd objects
    assert ar["AR-100"] == pytest.approx(0.5)


def test_corloc_one_box_per_image():
    gt = {
        "hit": np.array([[0, 0, 10, 10], [50, 50, 60, 60]]),
        "miss": np.array([[0, 0, 10, 10]]),
        "none": np.array([[0, 0, 10, 10]]),
    }
    pred = {"hit": np.array([50, 50, 60, 57.2]), "miss": np.array([[0, 0, 10, 3]])}
    assert corloc(pred, gt) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="one box per image"):
        corloc({"hit": np.array([[0, 0, 1, 1], [0, 0, 2, 2]])}, gt)


def test_mask_helpers():
    with pytest.raises(ValueError, match="sizes differ"):
        pairwise_mask_iou(np.zeros((1, 4, 4)), np.zeros((1, 5, 5)))
    assert pairwise_mask_iou(np.zeros((1, 3, 3)), np.zeros((2, 3, 3))).tolist() == [[0.0, 0.0]]
    patch = np.zeros((1, 2, 3), dtype=bool)
    patch[0, 1, 2] = True  # bottom-right patch of a 2 x 3 grid, P = 4
    pixels = patch_masks_to_pixels(patch, patch_size=4, scale=(1.0, 1.0), image_size=(9, 13))
    assert pixels.shape == (1, 9, 13)
    assert pixels[0, 4:8, 8:12].all() and pixels.sum() == 16  # the cropped border is False
    doubled = patch_masks_to_pixels(patch, patch_size=4, scale=(2.0, 2.0), image_size=(16, 24))
    assert doubled[0, 8:16, 16:24].all() and doubled.sum() == 64


def test_detection_scores_names_every_convention():
    scores = detection_scores(
        recall_curve={0.5: 0.25},
        greedy={"AR": 0.4, "recall": {0.5: 0.4}, "n_gt": 3},
        cocoeval={"AR-100": 0.3},
        corloc_value=0.6,
    )
    assert scores.protocol == "detection"
    assert scores.values == {
        "recall-anymatch-mask-iou0.5": 0.25,
        "AR-greedy-100": 0.4,
        "cocoeval-bbox-AR-100": 0.3,
        "CorLoc": 0.6,
    }
    with pytest.raises(ValueError):
        detection_scores()
