"""INSTRE: gnd_instre.mat read in every box format / index base it may come in,
checked against the .txt boxes and class folders."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from claid.datasets import DatasetFormatError, DatasetNotFoundError
from claid.datasets.instre import load_instre
from claid.evaluation.protocols import resolve_protocol

# class folder -> list of (image name, [x y w h boxes])
CLASSES = {
    "INSTRE-S1/01a_book": [("001", [[4, 6, 20, 18]]), ("002", [[0, 0, 30, 40]]),
                           ("003", [[10, 10, 5, 5]]), ("004", [[1, 2, 3, 4]])],
    "INSTRE-S1/02b_cup": [("001", [[8, 4, 24, 30]]), ("002", [[2, 2, 10, 10]]),
                          ("003", [[5, 5, 20, 20]])],
    "INSTRE-M/01_pair": [("001", [[2, 3, 10, 12], [30, 20, 14, 16]]),
                         ("002", [[0, 0, 8, 8], [20, 20, 8, 8]]), ("003", [[1, 1, 9, 9], [9, 9, 9, 9]])],
}  # fmt: skip
QUERIES = ["INSTRE-S1/01a_book/001.jpg", "INSTRE-S1/02b_cup/001.jpg", "INSTRE-M/01_pair/001.jpg"]
# Interleaved so that reading 1-based indices as 0-based lands in another class.
IMLIST = [
    "INSTRE-S1/01a_book/002.jpg", "INSTRE-S1/02b_cup/002.jpg", "INSTRE-M/01_pair/002.jpg",
    "INSTRE-S1/01a_book/003.jpg", "INSTRE-S1/02b_cup/003.jpg", "INSTRE-M/01_pair/003.jpg",
    "INSTRE-S1/01a_book/004.jpg",
]  # fmt: skip


def _xyxy(xywh):
    x, y, w, h = xywh
    return [x, y, x + w, y + h]


def _union(boxes):
    b = np.array([_xyxy(x) for x in boxes], float)
    return [b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()]


def _build(root, save, *, bbx_format="xyxy", base=1, corrupt=None):
    for folder, items in CLASSES.items():
        for name, boxes in items:
            save(root / folder / f"{name}.jpg")
            lines = "".join(" ".join(str(v) for v in b) + "\n" for b in boxes)
            (root / folder / f"{name}.txt").write_text(lines)
    gnd = np.zeros((1, len(QUERIES)), dtype=[("ok", object), ("bbx", object)])
    for i, q in enumerate(QUERIES):
        folder, name = q.rsplit("/", 1)
        boxes = dict(CLASSES[folder])[name[:-4]]
        x1, y1, x2, y2 = _union(boxes)
        bbx = [x1, y1, x2, y2] if bbx_format == "xyxy" else [x1, y1, x2 - x1, y2 - y1]
        ok = [j + base for j, im in enumerate(IMLIST) if im.startswith(folder + "/")]
        if corrupt == "box" and i == 1:
            bbx = [v + 7 for v in bbx]
        if corrupt == "ok" and i == 0:
            ok = [ok[0], 1 + base]  # a cup image among the book's positives
        gnd[0, i]["ok"] = np.array(ok, dtype=np.float64).reshape(1, -1)
        gnd[0, i]["bbx"] = np.array(bbx, dtype=np.float64).reshape(1, -1)
    cell = lambda xs: np.array(xs, dtype=object).reshape(1, -1)  # noqa: E731
    scipy.io.savemat(root / "gnd_instre.mat", {"qimlist": cell(QUERIES), "imlist": cell(IMLIST),
                                               "gnd": gnd})  # fmt: skip
    return root


@pytest.mark.parametrize("bbx_format", ["xyxy", "xywh"])
@pytest.mark.parametrize("base", [0, 1])
def test_every_reading_gives_the_same_benchmark(tmp_path, image_writer, bbx_format, base):
    bench = load_instre(_build(tmp_path, image_writer, bbx_format=bbx_format, base=base))
    assert bench.protocol["gnd_bbx_format"] == bbx_format
    assert bench.protocol["gnd_ok_index_base"] == base
    assert bench.database == IMLIST
    book, cup, pair = bench.queries
    assert book.image == QUERIES[0] and book.box == (4.0, 6.0, 24.0, 24.0)
    assert book.positives == [IMLIST[0], IMLIST[3], IMLIST[6]]
    assert cup.positives == [IMLIST[1], IMLIST[4]]
    # INSTRE-M query box covers both objects.
    assert pair.box == (2.0, 3.0, 44.0, 36.0) and pair.extra["subset"] == "INSTRE-M"
    np.testing.assert_array_equal(bench.gt_boxes[IMLIST[2]], [[0, 0, 8, 8], [20, 20, 28, 28]])
    assert bench.protocol["family"] == "lab" and bench.protocol["remove_queries_from_db"]
    assert resolve_protocol(bench.protocol).family == bench.protocol["family"]


def test_subset_keeps_only_its_queries(tmp_path, image_writer):
    bench = load_instre(_build(tmp_path, image_writer), subset="INSTRE-M")
    assert [q.image for q in bench.queries] == [QUERIES[2]]
    assert bench.database == IMLIST


def test_box_disagreement_stops(tmp_path, image_writer):
    with pytest.raises(DatasetFormatError, match="bbx matches the .txt boxes under no reading"):
        load_instre(_build(tmp_path, image_writer, corrupt="box"))


def test_positive_from_another_class_stops(tmp_path, image_writer):
    with pytest.raises(DatasetFormatError, match="index base"):
        load_instre(_build(tmp_path, image_writer, corrupt="ok"))


def test_missing_split_file_says_where_to_get_it(tmp_path, image_writer):
    root = _build(tmp_path, image_writer)
    (root / "gnd_instre.mat").unlink()
    with pytest.raises(DatasetNotFoundError, match="gnd_instre.mat"):
        load_instre(root)
