"""Fuzzer of detector files (``cutter=from_file``), run in a subprocess by
test_fuzz_in_subprocesses.py (pycocotools' C code could crash it): any generated file
loads into valid regions or stops with one RegionsFileError line."""

import json

import numpy as np
from hypothesis import event, given
from hypothesis import strategies as st

from claid.detections.budget import check_mask_memory
from claid.detections.read import RegionsFile, RegionsFileError

from .fuzz import JSON, NUMBERS, field_value, fuzz_settings, limit_memory, mutated_bytes, one_line

DB = ["a.jpg", "b/c.jpg"]
SIZES = {"a.jpg": (48, 64), "b/c.jpg": (30, 20)}
RLE_CHARS = "".join(chr(48 + k) for k in range(64))

boxes = st.lists(st.one_of(st.integers(-2, 70), st.floats(-2, 70), NUMBERS), min_size=4, max_size=4)
polygons = st.lists(st.lists(st.one_of(st.integers(-10, 80), st.floats(-100, 200), NUMBERS),
                             min_size=6, max_size=12), min_size=1, max_size=2)
sizes = st.sampled_from([[48, 64], [30, 20], [64, 48]])
rles = st.fixed_dictionaries({"size": field_value(sizes), "counts": st.one_of(
    st.text(alphabet=RLE_CHARS, max_size=24),
    st.lists(st.integers(-3, 48 * 64), max_size=6), st.just([0, 48 * 64]), st.just([100, 20, 48 * 64 - 120]))})
grids = st.fixed_dictionaries({"grid": field_value(st.sampled_from([[3, 4], [2, 2], [10**6, 10**6]])),
                               "cell": field_value(st.sampled_from([[16.0, 16.0], [10.0, 10.0]])),
                               "counts": st.text(alphabet=RLE_CHARS, max_size=10)})
ids = st.one_of(st.integers(0, 5), st.text(max_size=3), JSON)
entries = st.fixed_dictionaries({}, optional={
    "file_name": field_value(st.sampled_from(DB)), "image_id": ids, "bbox": field_value(boxes),
    "segmentation": field_value(st.one_of(polygons, rles)), "score": field_value(st.floats(0, 1)),
    "depth": field_value(st.integers(1, 4)), "id": ids, "parent": ids, "claid_mask": field_value(grids)})
good_polygons = st.lists(st.lists(st.integers(0, 19), min_size=6, max_size=10), min_size=1, max_size=2)
good_rles = st.sampled_from([{"size": [48, 64], "counts": [100, 20, 48 * 64 - 120]},
                             {"size": [48, 64], "counts": "PPYo1"}, {"size": [30, 20], "counts": [10, 5, 585]}])
good_entries = st.fixed_dictionaries(
    {"file_name": st.sampled_from(DB), "bbox": st.tuples(st.integers(0, 10), st.integers(0, 10),
                                                         st.integers(1, 9), st.integers(1, 9)).map(list)},
    optional={"segmentation": st.one_of(good_polygons, good_rles), "score": st.floats(0, 1),
              "depth": st.integers(1, 3), "id": st.integers(0, 6), "parent": st.integers(0, 6)})
entries = st.one_of(good_entries, good_entries, good_entries, entries)
images = st.fixed_dictionaries({"id": ids, "file_name": field_value(st.sampled_from(DB))},
                               optional={"width": field_value(st.sampled_from([64, 20])),
                                         "height": field_value(st.sampled_from([48, 30]))})
files = st.one_of(st.lists(entries, max_size=6),
                  st.fixed_dictionaries({"annotations": st.lists(entries, max_size=6)},
                                        optional={"images": field_value(st.lists(images, max_size=3))}),
                  JSON)


def _check(regions, image_id):
    height, width = SIZES[image_id]
    out = regions.regions_of(image_id, height, width, 4)
    count = len(out.boxes)
    assert out.boxes.shape == (count, 4) and out.boxes.dtype == np.float32
    assert np.isfinite(out.boxes).all()
    assert (out.boxes[:, :2] >= 0).all() and (out.boxes[:, 2] <= width).all() and (out.boxes[:, 3] <= height).all()
    assert (out.boxes[:, 0] < out.boxes[:, 2]).all() and (out.boxes[:, 1] < out.boxes[:, 3]).all()
    assert out.masks.dtype == bool and out.masks.shape[0] == count
    assert (out.depth >= 1).all() and ((out.parent >= -1) & (out.parent < count)).all()


@fuzz_settings(400)
@given(data=files, raw=st.data(), max_regions=st.sampled_from([None, 2]))
def test_a_detector_file_loads_into_valid_regions_or_is_one_line(tmp_path_factory, data, raw, max_regions):
    payload = raw.draw(mutated_bytes(json.dumps(data).encode()))
    path = tmp_path_factory.mktemp("det") / "det.json"
    path.write_bytes(payload)
    try:
        regions = RegionsFile.load(str(path), DB, max_regions=max_regions)
        regions.check_sizes(SIZES)
        check_mask_memory(regions, SIZES, 4, max_memory_gb=0.5)
        for image_id in DB:
            _check(regions, image_id)
        event(f"loaded, {sum(len(r) for r in regions.by_image.values())} regions")
    except RegionsFileError as err:
        one_line(err)
        event(f"refused: {str(err).split(': ', 2)[-1][:24]}")


if __name__ == "__main__":
    limit_memory()
