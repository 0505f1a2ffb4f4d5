"""IoU (standard vs the lab's enclosing form), the lab's mIoU and the box-end quirk."""

import numpy as np
import pytest

from claid.evaluation import (
    PatchBoxes,
    localization_miou,
    pairwise_box_iou,
    patch_boxes_to_pixels,
    score_localization,
)

A = [0, 0, 10, 10]
B = [5, 5, 15, 15]


def test_standard_and_enclosing_iou_on_the_protocols_example():
    assert pairwise_box_iou(A, B, iou="standard")[0, 0] == pytest.approx(25 / 175)  # 0.143
    assert pairwise_box_iou(A, B, iou="enclosing")[0, 0] == pytest.approx(25 / 225)  # 0.111
    assert round(float(pairwise_box_iou(A, B)[0, 0]), 3) == 0.143
    assert round(float(pairwise_box_iou(A, B, iou="enclosing")[0, 0]), 3) == 0.111


def test_iou_edge_cases_and_shape():
    boxes = np.array([A, B, [20, 20, 30, 30]], np.float32)
    iou = pairwise_box_iou(boxes, np.array([A, [0, 0, 20, 20]]))
    assert iou.shape == (3, 2)
    assert iou[0, 0] == pytest.approx(1.0)
    assert iou[2, 0] == 0.0  # disjoint
    assert iou[0, 1] == pytest.approx(100 / 400)  # contained: both forms agree
    assert pairwise_box_iou(A, [0, 0, 20, 20], iou="enclosing")[0, 0] == pytest.approx(0.25)
    assert pairwise_box_iou([3, 3, 3, 3], [3, 3, 3, 3])[0, 0] == 0.0  # empty boxes, no NaN
    assert pairwise_box_iou(np.zeros((0, 4)), [A]).shape == (0, 1)


@pytest.mark.parametrize(
    ("a", "kwargs"),
    [
        ([10, 0, 0, 10], {}),  # x2 < x1
        ([0, 0, np.nan, 10], {}),
        ([0, 0, 10], {}),
        (A, {"iou": "giou"}),
    ],
)
def test_bad_boxes_raise(a, kwargs):
    with pytest.raises(ValueError):
        pairwise_box_iou(a, B, **kwargs)


def test_lab_miou_best_box_per_reference_image_zero_without_regions():
    gt = {"im1": np.array([A]), "im2": np.array([B]), "im4": np.zeros((0, 4))}
    pred = {
        "im1": np.array([B, A]),  # best: exact match -> 1
        "im3": np.array([A]),  # no ground truth: ignored
    }  # im2 has no region -> 0; im4 has no gt box -> not a reference image
    assert localization_miou(pred, gt) == pytest.approx(0.5)
    pred["im2"] = np.array(A)
    assert localization_miou(pred, gt) == pytest.approx((1 + 25 / 175) / 2)
    assert localization_miou(pred, gt, iou="enclosing") == pytest.approx((1 + 25 / 225) / 2)
    with pytest.raises(ValueError, match="no image has a ground-truth box"):
        localization_miou(pred, {})


def test_box_end_exact_versus_the_labs_quirk():
    # a 28 x 28 grid of 8-pixel patches: the whole image is 224 px
    whole = np.array([[0, 0, 28, 28]])
    assert patch_boxes_to_pixels(whole, patch_size=8).tolist() == [[0, 0, 224, 224]]
    # lab: max_index * (P + 1) = 27 * 9 = 243, past the right and bottom edges
    assert patch_boxes_to_pixels(whole, patch_size=8, box_end="lab").tolist() == [[0, 0, 243, 243]]
    box = np.array([[1, 2, 3, 4]])
    assert patch_boxes_to_pixels(box, patch_size=8, scale=(2.0, 0.5)).tolist() == [[4, 32, 12, 64]]
    assert patch_boxes_to_pixels(box, patch_size=8, box_end="lab").tolist() == [[8, 16, 18, 27]]
    clipped = patch_boxes_to_pixels(whole, patch_size=8, image_size=(200, 210))
    assert clipped.tolist() == [[0, 0, 210, 200]]
    with pytest.raises(ValueError, match="box_end"):
        patch_boxes_to_pixels(box, patch_size=8, box_end="quirk")


def test_score_localization_labels_iou_and_box_end():
    gt = {"im": np.array([[0, 0, 224, 224]], np.float32)}
    regions = {"im": PatchBoxes(boxes=np.array([[0, 0, 28, 28]]), patch_size=8)}
    exact = score_localization(regions, gt)
    lab = score_localization(regions, gt, iou="enclosing", box_end="lab")
    assert exact.protocol == "loc" and exact.values == {"mIoU-standard": pytest.approx(1.0)}
    assert lab.values == {"mIoU-enclosing-lab-box-end": pytest.approx(224**2 / 243**2)}
    assert lab.settings["box_end"] == "lab" and lab.settings["iou"] == "enclosing"
    pixel = score_localization({"im": np.array([[0, 0, 112, 224]])}, gt)
    assert pixel.values["mIoU-standard"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="needs PatchBoxes"):
        score_localization({"im": np.array([[0, 0, 112, 224]])}, gt, box_end="lab")
