"""Every bad entry of a regions file stops the run with one line: file, entry, why."""

import json

import pytest

from claid.config.build import build
from claid.config.rules import SettingsError
from claid.detections.coco_masks import SegmentationError, rle_counts
from claid.pipeline import run

SMALL = ["descriptor.pretrained=false", "backbone.pretrained=false"]
TINY = ["dataset.n_scenes=6", "dataset.n_queries=3", "dataset.image_size=[96,128]"]
GOOD = {"bbox": [10, 10, 30, 30], "score": 0.5}


def _fail(compose_cfg, tmp_path, data):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    cfg = compose_cfg(*SMALL, *TINY, "cutter=from_file", f"cutter.path={path}")
    with pytest.raises(SettingsError) as err:
        run(cfg, run_dir=tmp_path / "run")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


def _db(compose_cfg):
    return build(compose_cfg(*SMALL, *TINY).dataset).database


def _one(name, **entry):
    return [{"file_name": name, **GOOD}, {"file_name": name, **entry}]


def test_region_wholly_outside(compose_cfg, tmp_path):
    name = _db(compose_cfg)[0]
    msg = _fail(compose_cfg, tmp_path, _one(name, bbox=[130, 10, 20, 20]))
    assert f"entry[1] (image '{name}'): region wholly outside the 128x96 image" in msg


def test_region_reaching_more_than_a_pixel_outside(compose_cfg, tmp_path):
    name = _db(compose_cfg)[0]
    msg = _fail(compose_cfg, tmp_path, _one(name, bbox=[100, 10, 30, 20]))
    assert "entry[1]" in msg and "reaches 2 px past the 128x96 image" in msg


@pytest.mark.parametrize("bbox", [[10, 10, 0, 5], [10, 10, 5, -1]])
def test_degenerate_box(compose_cfg, tmp_path, bbox):
    msg = _fail(compose_cfg, tmp_path, _one(_db(compose_cfg)[0], bbox=bbox))
    assert "entry[1]: degenerate region: bbox" in msg


def test_empty_segmentation_is_degenerate(compose_cfg, tmp_path):
    rle = {"size": [96, 128], "counts": [96 * 128]}
    msg = _fail(compose_cfg, tmp_path, _one(_db(compose_cfg)[0], segmentation=rle))
    assert "degenerate region: its segmentation covers no pixel" in msg


@pytest.mark.parametrize("counts, why", [
    ("0P", "ends inside a run length"),           # "P" sets the continuation bit
    ("a~~~", "outside the code"),
    ("PPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPP0", "cover"),   # runs that overshoot the image
    ([5, 10], "cover 15 pixels"),
    ([100, -5, 12193], "negative run length"),
])
def test_malformed_rle(compose_cfg, tmp_path, counts, why):
    seg = {"size": [96, 128], "counts": counts}
    msg = _fail(compose_cfg, tmp_path, _one(_db(compose_cfg)[0], segmentation=seg))
    assert "entry[1]" in msg and "malformed segmentation" in msg and why in msg


def test_rle_of_another_size(compose_cfg, tmp_path):
    seg = {"size": [100, 128], "counts": [100 * 128]}
    msg = _fail(compose_cfg, tmp_path, _one(_db(compose_cfg)[0], segmentation=seg))
    assert "RLE size [100, 128] (height, width) does not match the image's [96, 128]" in msg


def test_malformed_polygon(compose_cfg, tmp_path):
    msg = _fail(compose_cfg, tmp_path, _one(_db(compose_cfg)[0], segmentation=[[1, 2, 3, 4]]))
    assert "at least 3 points" in msg


def test_unknown_image_by_file_name_and_by_id(compose_cfg, tmp_path):
    msg = _fail(compose_cfg, tmp_path, [{"file_name": "nowhere/x.png", **GOOD}])
    assert "entry[0]: unknown image: file_name 'nowhere/x.png'" in msg
    data = {"images": [{"id": 1, "file_name": _db(compose_cfg)[0]}],
            "annotations": [{"image_id": 1, **GOOD}, {"image_id": 7, **GOOD}]}
    msg = _fail(compose_cfg, tmp_path, data)
    assert "annotations[1]: unknown image: image_id 7 is in no images list" in msg


def test_width_height_mismatch(compose_cfg, tmp_path):
    name = _db(compose_cfg)[0]
    data = {"images": [{"id": 1, "file_name": name, "width": 256, "height": 96}],
            "annotations": [{"image_id": 1, **GOOD}]}
    msg = _fail(compose_cfg, tmp_path, data)
    assert f"image '{name}': width/height 256x96 in the file, the image is 128x96" in msg


def test_not_a_regions_file(compose_cfg, tmp_path):
    assert "neither a COCO results list" in _fail(compose_cfg, tmp_path, {"images": []})
    path = tmp_path / "bad.json"
    cfg = compose_cfg(*SMALL, *TINY, "cutter=from_file", f"cutter.path={tmp_path / 'missing.json'}")
    with pytest.raises(SettingsError, match="cannot read the regions file"):
        run(cfg, run_dir=tmp_path / "run")
    path.write_text("{not json")
    cfg = compose_cfg(*SMALL, *TINY, "cutter=from_file", f"cutter.path={path}")
    with pytest.raises(SettingsError, match="not JSON"):
        run(cfg, run_dir=tmp_path / "run")


def test_a_box_overshooting_by_one_pixel_is_clipped_and_counted(compose_cfg, tmp_path):
    from claid.store import RegionStore

    name = _db(compose_cfg)[0]
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(_one(name, bbox=[-0.5, 70, 129, 26.8])))
    cfg = compose_cfg(*SMALL, *TINY, "cutter=from_file", f"cutter.path={path}")
    result = run(cfg, run_dir=tmp_path / "run")
    assert result.report["counts"]["regions_from_file"]["clipped_boxes"] == 1
    boxes = RegionStore.open(result.report["settings"]["store"]).regions_of(name).boxes
    assert boxes[1].tolist() == pytest.approx([0, 70, 128, 96])


def test_rle_parser_matches_pycocotools():
    import numpy as np
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    m = np.asfortranarray((rng.random((37, 53)) > 0.6).astype(np.uint8))
    rle = mask_utils.encode(m)
    runs = rle_counts(rle["counts"])
    assert sum(runs) == 37 * 53
    flat = np.repeat(np.arange(len(runs)) % 2, runs)
    assert (flat.reshape(53, 37).T == m).all()
    with pytest.raises(SegmentationError):
        rle_counts(b"0P")


def test_a_bad_claid_mask_is_one_line(compose_cfg, tmp_path):
    name = _db(compose_cfg)[0]
    huge = {"grid": [100000, 100000], "cell": [1.0, 1.0], "counts": [10 ** 10]}
    msg = _fail(compose_cfg, tmp_path, _one(name, claid_mask=huge, bbox=[1, 1, 5, 5]))
    assert "claid_mask: grid [100000, 100000] is far finer" in msg
    short = {"grid": [12, 16], "cell": [8.0, 8.0], "counts": [5]}
    assert "claid_mask: RLE runs cover 5 pixels" in _fail(compose_cfg, tmp_path, _one(name, claid_mask=short, bbox=[1, 1, 5, 5]))


def test_a_descriptor_that_pools_the_detectors_tokens_is_refused(compose_cfg, tmp_path):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(_one(_db(compose_cfg)[0], bbox=[1, 1, 5, 5])))
    cfg = compose_cfg(*SMALL, *TINY, "cutter=from_file", f"cutter.path={path}", "descriptor=vit_tokens",
                      "backbone=dino_vits8")
    with pytest.raises(SettingsError, match="needs a descriptor that reads the image"):
        run(cfg, run_dir=tmp_path / "run")
