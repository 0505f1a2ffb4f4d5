"""COCO 20k and val2017 for the detector recall curve."""

from __future__ import annotations

import json

import numpy as np
import pytest

from claid.datasets import DatasetFormatError, DatasetNotFoundError, coco
from claid.datasets.files import md5sum


def _instances(images):
    anns = []
    for i, (image_id, _) in enumerate(images):
        anns.append({"id": 10 * i + 1, "image_id": image_id, "bbox": [1, 2, 10, 20],
                     "iscrowd": 0, "category_id": 1, "area": 200.0,
                     "segmentation": [[1, 2, 11, 2, 11, 22, 1, 22]]})  # fmt: skip
        anns.append({"id": 10 * i + 2, "image_id": image_id, "bbox": [0, 0, 5, 5], "iscrowd": 1,
                     "category_id": 1, "area": 25.0,
                     "segmentation": {"counts": [0, 25], "size": [48, 64]}})  # fmt: skip
    return {
        "images": [{"id": i, "file_name": f, "height": 48, "width": 64} for i, f in images],
        "annotations": anns,
        "categories": [{"id": 1, "name": "thing"}],
    }


def test_val2017_keeps_crowd_and_points_at_the_annotations(tmp_path, image_writer):
    images = [(139, "000000000139.jpg"), (285, "000000000285.jpg")]
    for _, f in images:
        image_writer(tmp_path / "val2017" / f)
    ann = tmp_path / "annotations" / "instances_val2017.json"
    ann.parent.mkdir()
    ann.write_text(json.dumps(_instances(images)))
    bench = coco.load_coco_val2017(tmp_path)
    assert bench.root == str(tmp_path / "val2017")
    assert bench.database == ["000000000139.jpg", "000000000285.jpg"]
    assert bench.queries == [] and bench.gt_masks_file == str(ann)
    np.testing.assert_array_equal(
        bench.gt_boxes["000000000139.jpg"], [[1, 2, 11, 22], [0, 0, 5, 5]]
    )
    assert bench.protocol["family"] == "detection" and bench.protocol["include_crowd"]
    (tmp_path / "val2017" / "000000000285.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match="1 of 2 images are missing"):
        coco.load_coco_val2017(tmp_path)


@pytest.fixture
def coco20k(tmp_path, image_writer):
    images = [(9, "COCO_train2014_000000000009.jpg"), (25, "COCO_train2014_000000000025.jpg"),
              (30, "COCO_train2014_000000000030.jpg")]  # fmt: skip
    for _, f in images:
        image_writer(tmp_path / "train2014" / f)
    ann = tmp_path / "annotations" / "instances_train2014.json"
    ann.parent.mkdir()
    ann.write_text(json.dumps(_instances(images)))
    (tmp_path / "coco_20k_filenames.txt").write_text(
        "train2014/COCO_train2014_000000000009.jpg\ntrain2014/COCO_train2014_000000000030.jpg\n"
    )
    return tmp_path


def test_coco20k_list_must_match_the_pinned_md5(coco20k):
    with pytest.raises(DatasetFormatError, match=coco.COCO20K_LIST_MD5):
        coco.load_coco20k(coco20k, cache_dir=coco20k / "cache")


def test_coco20k_subset_drops_crowd_and_other_images(coco20k, monkeypatch):
    digest = md5sum(coco20k / "coco_20k_filenames.txt")
    monkeypatch.setattr(coco, "COCO20K_LIST_MD5", digest)
    bench = coco.load_coco20k(coco20k, cache_dir=coco20k / "cache")
    assert bench.database == ["COCO_train2014_000000000009.jpg", "COCO_train2014_000000000030.jpg"]
    assert bench.root == str(coco20k / "train2014")
    with open(bench.gt_masks_file) as f:
        subset = json.load(f)
    assert [img["id"] for img in subset["images"]] == [9, 30]
    assert all(a["iscrowd"] == 0 for a in subset["annotations"]) and len(subset["annotations"]) == 2
    np.testing.assert_array_equal(
        bench.gt_boxes["COCO_train2014_000000000009.jpg"], [[1, 2, 11, 22]]
    )
    assert bench.protocol["file_list_md5"] == digest and not bench.protocol["include_crowd"]
    # Second call reuses the written subset.
    stamp = (coco20k / "cache").stat().st_mtime_ns
    again = coco.load_coco20k(coco20k, cache_dir=coco20k / "cache")
    assert again.gt_masks_file == bench.gt_masks_file
    assert (coco20k / "cache").stat().st_mtime_ns == stamp


def test_coco20k_unchecked_list_is_recorded(coco20k):
    bench = coco.load_coco20k(coco20k, cache_dir=coco20k / "cache", check_md5=False)
    assert bench.protocol["file_list_md5"] != coco.COCO20K_LIST_MD5
