"""The user's own collection: list_images and queries.jsonl parsing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage import data

from claid.datasets import DatasetFormatError, DatasetNotFoundError, list_images
from claid.datasets.manifest import load_manifest


def _save(path, size=(60, 80)):
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    Image.fromarray(data.astronaut()[:h, :w]).save(path)


@pytest.fixture
def collection(tmp_path):
    for rel in ("db/b.jpg", "db/sub/a.PNG", "db/c.JpEg", "q/query.jpg", "q/other.png"):
        _save(tmp_path / rel)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".cache").mkdir()
    _save(tmp_path / ".cache" / "hidden.jpg")
    return tmp_path


def _write(root, *records):
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    (root / "queries.jsonl").write_text("\n".join(lines) + "\n")


def test_list_images_is_recursive_sorted_and_case_insensitive(collection):
    assert list_images(collection) == [
        "db/b.jpg",
        "db/c.JpEg",
        "db/sub/a.PNG",
        "q/other.png",
        "q/query.jpg",
    ]
    with pytest.raises(DatasetNotFoundError):
        list_images(collection / "nope")


def test_without_queries_it_only_indexes(collection):
    bench = load_manifest(collection)
    assert bench.queries == [] and bench.protocol["family"] == "none"
    assert len(bench.database) == 5


def test_queries_leave_the_database(collection):
    _write(
        collection,
        {"image": "q/query.jpg", "box": [10, 5, 50, 40], "positives": ["db/b.jpg", "db/sub/a.PNG"]},
        "",
        {"image": "./q/other.png", "box": None, "junk": ["db/c.JpEg"], "qid": "whole"},
    )
    bench = load_manifest(collection)
    assert bench.database == ["db/b.jpg", "db/c.JpEg", "db/sub/a.PNG"]
    first, second = bench.queries
    assert first.box == (10.0, 5.0, 50.0, 40.0) and first.positives == ["db/b.jpg", "db/sub/a.PNG"]
    assert second.image == "q/other.png" and second.box is None and second.qid == "whole"
    assert second.junk == ["db/c.JpEg"]
    assert bench.protocol["family"] == "lab" and bench.protocol["junk"] is True
    assert bench.path(first.image) == str(collection / "q/query.jpg")


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"image": "q/query.jpg", "box": [1, 2', "queries.jsonl:2: not a JSON object"),
        ('["q/query.jpg"]', "queries.jsonl:2: expected a JSON object"),
        ({"image": "q/missing.jpg"}, "queries.jsonl:2: image 'q/missing.jpg'"),
        ({"image": "q/query.jpg", "box": [10, 10, 10, 30]}, "queries.jsonl:2: .* is empty"),
        ({"image": "q/query.jpg", "box": [10, 10, 90, 30]}, "queries.jsonl:2: .* outside"),
        ({"image": "q/query.jpg", "box": [1, 2, 3]}, "queries.jsonl:2: .* four"),
        ({"image": "q/query.jpg", "positives": ["db/zzz.jpg"]}, "queries.jsonl:2: positives"),
        ({"image": "q/query.jpg", "postives": []}, "queries.jsonl:2: unknown key"),
        ({"image": "q/query.jpg", "positives": ["q/other.png"]}, "queries.jsonl:2: positive"),
        ({"box": None}, "queries.jsonl:2: 'image'"),
        ({"image": "q/query.jpg", "qid": "0000"}, "queries.jsonl:2: qid '0000' is used twice"),
    ],
)
def test_bad_lines_name_file_and_line(collection, bad, message):
    _write(collection, {"image": "q/other.png"}, bad)
    with pytest.raises(DatasetFormatError, match=message):
        load_manifest(collection)


def test_missing_root_says_what_to_provide(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="queries.jsonl"):
        load_manifest(tmp_path / "absent")


def test_box_clipping_is_not_silent(collection):
    # A box reaching exactly the image edge is fine (exclusive end).
    _write(collection, {"image": "q/query.jpg", "box": [0, 0, 80, 60]})
    bench = load_manifest(collection)
    assert np.allclose(bench.queries[0].box, (0, 0, 80, 60))



def test_query_boxes_are_checked_against_the_displayed_image(collection):
    # stored 80 wide x 60 high, EXIF orientation 6: displayed 60 wide x 80 high,
    # which is what the descriptor sees, so boxes are in those coordinates
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(data.astronaut()[:60, :80]).save(collection / "q" / "turned.jpg", exif=exif.tobytes())
    _write(collection, {"image": "q/turned.jpg", "box": [0, 0, 60, 80]})
    assert load_manifest(collection).queries[0].box == (0.0, 0.0, 60.0, 80.0)
    _write(collection, {"image": "q/turned.jpg", "box": [0, 0, 80, 60]})
    with pytest.raises(DatasetFormatError, match="queries.jsonl:1: .* outside the 60x80"):
        load_manifest(collection)


@pytest.mark.parametrize("box", [None, [0, 0, 10, 10]])
def test_unreadable_query_image_names_the_line(collection, box):
    (collection / "q" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    _write(collection, {"image": "q/other.png"}, {"image": "q/broken.jpg", "box": box})
    with pytest.raises(DatasetFormatError, match="queries.jsonl:2: query image 'q/broken.jpg': truncated"):
        load_manifest(collection)
