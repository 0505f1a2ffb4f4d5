"""A detector file from anyone: every defect a hostile file showed is one line now
(RegionsFileError), never a traceback or a crash, and nothing hostile is taken as good."""

import json
import subprocess
import sys

import numpy as np
import pytest

from claid.detections.read import RegionsFile, RegionsFileError

DB = ["a/1.jpg", "b/2.jpg"]
SIZES = {"a/1.jpg": (96, 128), "b/2.jpg": (96, 128)}


def _load(tmp_path, data, raw: bytes | None = None):
    path = tmp_path / "det.json"
    path.write_bytes(raw if raw is not None else json.dumps(data).encode())
    regions = RegionsFile.load(str(path), DB)
    regions.check_sizes(SIZES)
    return regions


def _refused(tmp_path, data=None, raw=None) -> str:
    with pytest.raises(RegionsFileError) as err:
        _load(tmp_path, data, raw)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "det.json"))
    assert len(message) < 600
    return message


@pytest.mark.parametrize("digits", [400, 5000])
def test_an_integer_of_hundreds_of_digits_in_a_bbox_is_one_line(tmp_path, digits):
    raw = b'[{"file_name": "a/1.jpg", "bbox": [1, 1, ' + b"9" * digits + b", 5]}]"
    message = _refused(tmp_path, raw=raw)
    assert "bbox" in message or "not JSON" in message


def test_an_integer_of_400_digits_as_a_width_is_one_line(tmp_path):
    raw = (b'{"images": [{"id": 1, "file_name": "a/1.jpg", "width": ' + b"9" * 400
           + b', "height": 96}], "annotations": [{"image_id": 1, "bbox": [1, 1, 5, 5]}]}')
    assert "width and height" in _refused(tmp_path, raw=raw)


def test_a_file_nested_deeper_than_the_parser_goes_is_one_line(tmp_path):
    raw = b"[" * 100_000 + b"]" * 100_000
    assert "nested deeper" in _refused(tmp_path, raw=raw)


def test_a_huge_depth_is_refused_not_an_overflow_later(tmp_path):
    data = [{"file_name": "a/1.jpg", "bbox": [1, 1, 5, 5], "depth": 10**30}]
    assert "depth must be an integer" in _refused(tmp_path, data)


def test_polygon_coordinates_far_outside_the_image_are_refused_in_a_subprocess(tmp_path):
    """1e9 used to segfault inside pycocotools: run it where a crash cannot take pytest down."""
    data = [{"file_name": "a/1.jpg", "segmentation": [[0, 0, 1e9, 0, 1e9, 1e9]]}]
    (tmp_path / "det.json").write_text(json.dumps(data))
    code = ("import sys; from claid.detections.read import RegionsFile, RegionsFileError\n"
            f"r = RegionsFile.load(sys.argv[1], {DB!r})\n"
            "try:\n    r.check_sizes({'a/1.jpg': (96, 128)})\n"
            "except RegionsFileError as err:\n    print(err); sys.exit(3)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "det.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, (done.returncode, done.stderr[-400:])
    assert "more than one image size outside the 128x96 image" in done.stdout


def test_two_unhashable_image_ids_are_not_matched_to_each_other(tmp_path):
    data = {"images": [{"id": [1], "file_name": "a/1.jpg"}],
            "annotations": [{"image_id": [2], "bbox": [1, 1, 5, 5]}]}
    assert "unknown image: image_id [2]" in _refused(tmp_path, data)


def test_the_same_detection_three_times_is_kept_once_and_counted(tmp_path):
    entry = {"file_name": "a/1.jpg", "bbox": [1, 1, 5, 5], "score": 0.9}
    other = {"file_name": "a/1.jpg", "bbox": [10, 10, 5, 5], "score": 0.9}
    regions = _load(tmp_path, [entry, entry, other, entry])
    assert regions.counts["duplicates_merged"] == 2
    assert len(regions.by_image["a/1.jpg"]) == 2


def test_a_parent_naming_a_merged_duplicate_names_the_kept_one(tmp_path):
    data = [{"file_name": "a/1.jpg", "id": 1, "bbox": [1, 1, 50, 50]},
            {"file_name": "a/1.jpg", "id": 2, "bbox": [1, 1, 50, 50]},
            {"file_name": "a/1.jpg", "id": 3, "bbox": [2, 2, 5, 5], "depth": 2, "parent": 2}]
    regions = _load(tmp_path, data)
    image = regions.regions_of("a/1.jpg", 96, 128, 8)
    assert regions.counts["duplicates_merged"] == 1
    assert image.parent.tolist() == [-1, 0]


def test_masks_are_sampled_from_runs_as_the_full_decode_gave(tmp_path):
    """Same masks as decoding at full resolution then sampling (the old way)."""
    from pycocotools import mask as mask_utils

    from claid.detections.coco_masks import decode_segmentation, encode_mask

    rng = np.random.default_rng(0)
    pixels = rng.random((96, 128)) > 0.6
    polygon = [[3.5, 4.0, 90.0, 10.0, 60.0, 80.0, 5.0, 70.0]]
    data = [{"file_name": "a/1.jpg", "segmentation": encode_mask(pixels)},
            {"file_name": "a/1.jpg", "segmentation": polygon},
            {"file_name": "a/1.jpg", "segmentation": {"size": [96, 128],
                                                      "counts": [5, 96 * 128 - 10, 5]}}]
    regions = _load(tmp_path, data)
    image = regions.regions_of("a/1.jpg", 96, 128, 4)
    ys = np.minimum(np.arange(24) * 4 + 2, 95)
    xs = np.minimum(np.arange(32) * 4 + 2, 127)
    for k, entry in enumerate(data):
        full = decode_segmentation(entry["segmentation"], 96, 128)
        assert np.array_equal(image.masks[k], full[np.ix_(ys, xs)])
        rows, cols = np.nonzero(full.any(axis=1))[0], np.nonzero(full.any(axis=0))[0]
        assert tuple(image.boxes[k]) == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    assert mask_utils is not None
