"""cocoeval_ar reads AP and AR at the max_dets it was given, as plain COCOeval computes them."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from claid.evaluation.cocoeval import cocoeval_ar


def _scene(seed: int = 0, n_images: int = 3, dets_per_image: int = 150):
    """Ground truth of a few boxes per image and many scored detections, some near a
    ground-truth box and ranked low, so the cut at 1 / 10 / 100 / 1000 matters."""
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "width": 400, "height": 300, "file_name": f"{image_id}.jpg"})
        gt_boxes = []
        for _ in range(4):
            x, y = rng.uniform(0, 300), rng.uniform(0, 200)
            w, h = rng.uniform(20, 90), rng.uniform(20, 90)
            gt_boxes.append((x, y, w, h))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 5,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})  # fmt: skip
        for d in range(dets_per_image):
            if d % 20 == 7 or d == 0:  # a jittered copy of a ground-truth box
                x, y, w, h = gt_boxes[(d // 20) % 4]
                box = [x + rng.normal(0, 4), y + rng.normal(0, 4), w * rng.uniform(0.8, 1.2), h * rng.uniform(0.8, 1.2)]
            else:
                box = [rng.uniform(0, 350), rng.uniform(0, 250), rng.uniform(5, 80), rng.uniform(5, 80)]
            # distinct scores: the order COCOeval keeps is then unambiguous
            results.append({"image_id": image_id, "bbox": box, "category_id": 1,
                            "score": float(1.0 - (d + rng.uniform(0, 0.5)) / (dets_per_image + 1))})  # fmt: skip
    gt = {"images": images, "annotations": annotations, "categories": [{"id": 5, "name": "thing"}]}
    return gt, results


def _plain_cocoeval(gt: dict, results: list[dict], max_dets: list[int]):
    """pycocotools as a user runs it: class-agnostic, default area ranges."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes([dict(r, category_id=5) for r in results]), "bbox")
        evaluator.params.useCats = 0
        evaluator.params.maxDets = max_dets
        evaluator.evaluate()
        evaluator.accumulate()
        if len(max_dets) == 3:  # summarize() reads maxDets[0..2]
            evaluator.summarize()
    return evaluator


def _top(results: list[dict], k: int) -> list[dict]:
    out = []
    for image_id in sorted({r["image_id"] for r in results}):
        mine = sorted((r for r in results if r["image_id"] == image_id), key=lambda r: -r["score"])
        out.extend(mine[:k])
    return out


@pytest.mark.parametrize("max_dets", [1, 10, 100, 1000])
def test_ap_and_ar_match_plain_cocoeval(max_dets):
    gt, results = _scene()
    ours = cocoeval_ar(results, gt, max_dets=max_dets)
    assert set(ours) == {"AR-1", "AR-10", f"AR-{max_dets}", "AP"}
    assert ours["AP"] > 0 and ours[f"AR-{max_dets}"] > 0  # never the -1 of a missing maxDets

    # plain COCOeval with the single cut-off max_dets: its accumulated precision / recall
    plain = _plain_cocoeval(gt, results, [max_dets])
    all_area = plain.params.areaRngLbl.index("all")
    precision = plain.eval["precision"][:, :, :, all_area, 0]
    recall = plain.eval["recall"][:, :, all_area, 0]
    assert ours["AP"] == pytest.approx(precision[precision > -1].mean(), abs=1e-12)
    assert ours[f"AR-{max_dets}"] == pytest.approx(recall[recall > -1].mean(), abs=1e-12)

    if max_dets <= 100:
        # summarize()'s own stats[0] (AP at 100 detections) on the top max_dets of each image
        stats = _plain_cocoeval(gt, _top(results, max_dets), [1, 10, 100]).stats
        assert ours["AP"] == pytest.approx(stats[0], abs=1e-12)
        assert ours[f"AR-{max_dets}"] == pytest.approx(stats[8], abs=1e-12)
    if max_dets == 100:
        stats = _plain_cocoeval(gt, results, [1, 10, 100]).stats
        assert (ours["AP"], ours["AR-1"], ours["AR-10"], ours["AR-100"]) == pytest.approx(
            (stats[0], stats[6], stats[7], stats[8]), abs=1e-12
        )


def test_more_detections_recall_more():
    gt, results = _scene(seed=1)
    values = [cocoeval_ar(results, gt, max_dets=m) for m in (1, 10, 100, 1000)]
    recalls = [v[f"AR-{m}"] for v, m in zip(values, (1, 10, 100, 1000))]
    assert recalls == sorted(recalls) and recalls[-1] > recalls[2]  # detections past 100 count


def test_exact_prediction_has_ap_one_at_every_max_dets():
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.jpg"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 30, 30],
                         "area": 900, "iscrowd": 0}],  # fmt: skip
        "categories": [{"id": 3, "name": "x"}],
    }
    results = [{"image_id": 1, "bbox": [10, 10, 30, 30], "score": 0.9, "category_id": 0}]
    for max_dets in (1, 50, 100, 1000):
        assert cocoeval_ar(results, gt, max_dets=max_dets)["AP"] == pytest.approx(1.0), max_dets
