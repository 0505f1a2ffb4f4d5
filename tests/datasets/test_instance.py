"""Instance-160 / Instance-335 in the lab layout."""

from __future__ import annotations

import numpy as np
import pytest

from claid.datasets import DatasetFormatError, DatasetNotFoundError
from claid.datasets.instance import load_instance160, load_instance335
from claid.evaluation.protocols import resolve_protocol


def _build(root, save, box_folder="bbox"):
    for seq, n in (("Basketball", 3), ("CarScale", 2)):
        for f in range(1, n + 1):
            save(root / "Images" / seq / f"{seq}_{f:04d}.jpg")
    (root / box_folder / "sub").mkdir(parents=True)
    (root / box_folder / "Basketball.txt").write_text(
        "Basketball_0001 10 12 20 30\nBasketball_0002.jpg 1 2 3 4\n\nBasketball_0003 0 0 64 48\n"
    )
    (root / box_folder / "sub" / "CarScale.txt").write_text("CarScale_0001 5 5 10 10\n")
    return root


def test_first_frame_is_the_query_and_boxes_become_x1y1x2y2(tmp_path, image_writer):
    bench = load_instance160(_build(tmp_path, image_writer))
    assert [q.image for q in bench.queries] == [
        "Images/Basketball/Basketball_0001.jpg",
        "Images/CarScale/CarScale_0001.jpg",
    ]
    basket = bench.queries[0]
    assert basket.box == (10.0, 12.0, 30.0, 42.0)
    assert basket.positives == [
        "Images/Basketball/Basketball_0002.jpg",
        "Images/Basketball/Basketball_0003.jpg",
    ]
    assert bench.database == [
        "Images/Basketball/Basketball_0002.jpg",
        "Images/Basketball/Basketball_0003.jpg",
        "Images/CarScale/CarScale_0002.jpg",
    ]
    np.testing.assert_array_equal(
        bench.gt_boxes["Images/Basketball/Basketball_0002.jpg"], [[1, 2, 4, 6]]
    )
    assert "Images/CarScale/CarScale_0002.jpg" not in bench.gt_boxes  # no box given
    assert bench.protocol["query_frames"] == "first frame of each sequence"
    assert resolve_protocol(bench.protocol).family == bench.protocol["family"]


def test_query_list_and_instance335_folder(tmp_path, image_writer):
    root = _build(tmp_path, image_writer, box_folder="merge_bbox")
    (root / "queries.txt").write_text("Basketball_0003\n")
    bench = load_instance335(root, query_list="queries.txt")
    (q,) = bench.queries
    assert q.image == "Images/Basketball/Basketball_0003.jpg" and q.box == (0.0, 0.0, 64.0, 48.0)
    assert bench.protocol["box_folder"] == "merge_bbox"
    with pytest.raises(DatasetNotFoundError, match="bbox"):
        load_instance160(root)


def test_bad_box_lines_name_file_and_line(tmp_path, image_writer):
    root = _build(tmp_path, image_writer)
    (root / "bbox" / "Basketball.txt").write_text("Basketball_0001 1 2 3 4\nGhost_0001 1 2 3 4\n")
    with pytest.raises(DatasetFormatError, match="Basketball.txt:2: frame 'Ghost_0001'"):
        load_instance160(root)
    (root / "bbox" / "Basketball.txt").write_text("Basketball_0001 1 2 0 4\n")
    with pytest.raises(DatasetFormatError, match="Basketball.txt:1: empty box"):
        load_instance160(root)
