"""ILIAS layout: image and text queries, positives, distractors."""

from __future__ import annotations

import numpy as np
import pytest

from claid.datasets import DatasetFormatError, DatasetNotFoundError
from claid.datasets.ilias import load_ilias
from claid.evaluation.protocols import resolve_protocol


@pytest.fixture
def ilias(tmp_path, image_writer):
    for i, inst in enumerate(("bold_bimp_000", "zippy_zootlenibble_999")):
        base = tmp_path / "ilias_core" / inst
        iid = inst[-3:]
        image_writer(base / "query" / f"Q{iid}_00.jpg")
        (base / "query" / f"Q{iid}_00_bbox.txt").write_text("4 5 20 10\n" if i == 0 else
                                                            "1 1 5 5\n30 20 10 10\n")  # fmt: skip
        (base / "query" / f"T{iid}.txt").write_text(f"a very particular object number {i}\n")
        for z in range(2):
            image_writer(base / "pos" / f"P{iid}_{z:02d}.jpg")
            (base / "pos" / f"P{iid}_{z:02d}_bbox.txt").write_text("0 0 8 8\n")
    # The ILIAS README lists box renderings beside positives: they are not photos.
    image_writer(tmp_path / "ilias_core" / "bold_bimp_000" / "pos" / "P000_00_bbox.png")
    image_writer(tmp_path / "yfcc100m" / "000" / "1234.jpg")
    return tmp_path


def test_queries_positives_and_distractors(ilias):
    bench = load_ilias(ilias)
    image_q = [q for q in bench.queries if q.image is not None]
    text_q = [q for q in bench.queries if q.text is not None]
    assert len(image_q) == 2 and len(text_q) == 2
    first = image_q[0]
    assert first.image == "ilias_core/bold_bimp_000/query/Q000_00.jpg"
    assert first.box == (4.0, 5.0, 24.0, 15.0)  # x y w h -> x1 y1 x2 y2
    assert first.positives == ["ilias_core/bold_bimp_000/pos/P000_00.jpg",
                               "ilias_core/bold_bimp_000/pos/P000_01.jpg"]  # fmt: skip
    assert image_q[1].box == (1.0, 1.0, 40.0, 30.0)  # two boxes: the query covers both
    assert text_q[0].text == "a very particular object number 0" and text_q[0].image is None
    assert "yfcc100m/000/1234.jpg" in bench.database and len(bench.database) == 5
    assert not any(q.image in bench.database for q in image_q)
    np.testing.assert_array_equal(bench.gt_boxes[first.positives[0]], [[0, 0, 8, 8]])
    p = bench.protocol
    assert p["family"] == "gldv2" and p["k"] == [1000] and p["n_distractors"] == 1
    assert resolve_protocol(bench.protocol).family == bench.protocol["family"]


def test_distractors_are_required_unless_declined(ilias):
    with pytest.raises(DatasetNotFoundError, match="distractors=null"):
        load_ilias(ilias, distractors="mini_ilias_yfcc")
    core = load_ilias(ilias, distractors=None, queries="image")
    assert core.protocol["distractors"] is None and len(core.database) == 4
    assert all(q.image is not None for q in core.queries)


def test_malformed_bbox_names_file_and_line(ilias):
    bad = ilias / "ilias_core" / "bold_bimp_000" / "query" / "Q000_00_bbox.txt"
    bad.write_text("4 5 20\n")
    with pytest.raises(DatasetFormatError, match="Q000_00_bbox.txt:1"):
        load_ilias(ilias)


def test_query_kinds_and_depths_for_table_x(ilias):
    text = load_ilias(ilias, queries="text", k=[50, 100, 1000])
    assert [q.qid for q in text.queries] == ["bold_bimp_000/T000", "zippy_zootlenibble_999/T999"]
    assert all(q.image is None and q.text for q in text.queries)
    assert text.protocol["k"] == [50, 100, 1000] and text.protocol["query_kinds"] == "text"
    assert resolve_protocol(text.protocol).family == "gldv2"
    images = load_ilias(ilias, queries="image")
    assert len(images.queries) == 2 and all(q.image is not None for q in images.queries)
    assert len(load_ilias(ilias).queries) == 4
    with pytest.raises(ValueError, match="queries must be one of"):
        load_ilias(ilias, queries="texts")
    for path in ilias.glob("ilias_core/*/query/T*.txt"):
        path.unlink()
    with pytest.raises(DatasetFormatError, match="no text queries"):
        load_ilias(ilias, queries="text")
