"""export-coco: a store as COCO JSON that pycocotools loads, COCOeval scores AP 1.0
against the store's own regions, detectron2's reader finds its fields in, and that
cutter=from_file reads back into the same regions and the same vectors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from claid.pipeline import run
from claid.store import RegionStore

CONF = Path(__file__).resolve().parents[2] / "conf"
COMMON = ["backbone=dino_vits8", "backbone.pretrained=false", "descriptor.pretrained=false",
          "engine.batch_size=4", "store.dtype=float32", "dataset.n_scenes=6", "dataset.n_queries=3",
          "dataset.image_size=[96,128]", "tracking=none"]


def _cfg(root, *overrides):
    base = [f"paths.root_dir={root}", f"paths.output_dir={root}/run"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=base + COMMON + list(overrides))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A k-sums store (mask pooling on, so masks shape the vectors) and its export."""
    root = tmp_path_factory.mktemp("export")
    result = run(_cfg(root, "descriptor.mask_pooling=true"), run_dir=root / "ksums")
    store_dir = result.report["settings"]["store"]
    out = root / "regions.json"
    done = subprocess.run([sys.executable, "-m", "claid", "export-coco", store_dir, str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    return root, RegionStore.open(store_dir), out


def test_pycocotools_loads_it_and_cocoeval_gives_ap_1_against_the_stores_regions(exported):
    _, store, out = exported
    gt = COCO(str(out))
    assert len(gt.getImgIds()) == store.num_images and len(gt.getAnnIds()) == store.num_regions
    per_image = int(store.region_counts().max())
    assert per_image > 1
    # detections built from the store itself, not from the file
    dets, region = [], 0
    for image, count in enumerate(store.region_counts()):
        for _ in range(int(count)):
            x1, y1, x2, y2 = (float(v) for v in store.boxes()[region])
            rle = mask_utils.encode(np.asfortranarray(store.mask_pixels(region).astype(np.uint8)))
            dets.append({"image_id": image + 1, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "segmentation": rle, "score": 1.0 - 0.001 * region})
            region += 1
    for kind in ("bbox", "segm"):
        evaluation = COCOeval(gt, gt.loadRes(dets), kind)
        evaluation.params.maxDets = [1, 10, max(100, per_image)]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        assert evaluation.stats[0] == pytest.approx(1.0), kind


def test_it_has_the_fields_detectron2_and_cutler_read(exported):
    _, store, out = exported
    data = json.loads(out.read_text())
    assert data["categories"] == [{"id": 1, "name": "fg"}]
    sizes = {i + 1: tuple(int(v) for v in s) for i, s in enumerate(store.image_sizes())}
    for image in data["images"]:  # load_coco_json: file_name, height, width, id
        assert image["file_name"] in store.image_ids
        assert (image["height"], image["width"]) == sizes[image["id"]]
    ids = [a["id"] for a in data["annotations"]]
    assert len(set(ids)) == len(ids)  # load_coco_json refuses repeated annotation ids
    for k, ann in enumerate(data["annotations"]):
        assert ann["category_id"] == 1 and ann["iscrowd"] == 0 and len(ann["bbox"]) == 4
        assert set(ann["segmentation"]) == {"size", "counts"} and isinstance(ann["segmentation"]["counts"], str)
        pixels = mask_utils.decode({**ann["segmentation"], "counts": ann["segmentation"]["counts"].encode()})
        assert (pixels.astype(bool) == store.mask_pixels(k)).all()
        assert ann["area"] == pixels.sum() and ann["depth"] >= 1 and "score" in ann
        if ann["parent"] != -1:
            assert data["annotations"][ann["parent"] - 1]["image_id"] == ann["image_id"]
    assert any(a["parent"] != -1 for a in data["annotations"])


def test_round_trip_through_from_file_gives_the_same_regions_and_vectors(exported):
    root, store, out = exported
    result = run(_cfg(root, "descriptor.mask_pooling=true", "cutter=from_file", f"cutter.path={out}"),
                 run_dir=root / "back")
    back = RegionStore.open(result.report["settings"]["store"])
    assert back.store_dir != store.store_dir and back.image_ids == store.image_ids
    for image_id in store.image_ids:
        a, b = store.regions_of(image_id), back.regions_of(image_id)
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.masks, b.masks)
        assert np.array_equal(a.depth, b.depth) and np.array_equal(a.parent, b.parent)
        np.testing.assert_allclose(b.vectors, a.vectors, atol=1e-6)
        np.testing.assert_allclose(b.whole_vector, a.whole_vector, atol=1e-6)


def test_a_bad_store_or_dataset_root_is_one_line(exported, tmp_path):
    root, store, _ = exported
    done = subprocess.run([sys.executable, "-m", "claid", "export-coco", str(tmp_path), str(tmp_path / "x.json")],
                          capture_output=True, text=True)
    assert done.returncode != 0 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, "-m", "claid", "export-coco", str(store.store_dir),
                           str(tmp_path / "x.json"), "--dataset-root", str(tmp_path)], capture_output=True, text=True)
    assert "error: --dataset-root" in done.stderr and not (tmp_path / "x.json").exists()
