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
        ({"image": "q/query.jpg", "box": [True, True, 10, 10]}, "queries.jsonl:2: .* true/false"),
        ({"image": "q/query.jpg", "box": "0 0 10 10"}, "queries.jsonl:2: .* four numbers"),
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


def test_invalid_utf8_line_is_named(collection):
    good = json.dumps({"image": "q/other.png"}).encode()
    bad = b'{"image": "q/query.jpg", "qid": "caf\xe9"}'  # Latin-1, not UTF-8
    (collection / "queries.jsonl").write_bytes(good + b"\n" + bad + b"\n")
    with pytest.raises(DatasetFormatError, match=r"^queries.jsonl:2: not valid UTF-8 \(byte 0xe9 at column 37\)"):
        load_manifest(collection)
    # a UTF-8 byte-order mark (Windows editors) is not an error
    (collection / "queries.jsonl").write_bytes(b"\xef\xbb\xbf" + good + b"\n")
    assert [q.image for q in load_manifest(collection).queries] == ["q/other.png"]


def test_file_name_that_is_not_utf8_is_indexed(collection):
    import os

    from claid.artifacts import database_key
    from claid.images import load_image

    raw = os.path.join(os.fsencode(collection / "db"), b"caf\xe9.jpg")  # a Latin-1 name
    Image.fromarray(data.astronaut()[:60, :80]).save(raw, format="JPEG")
    bench = load_manifest(collection)
    (odd,) = [i for i in bench.database if "caf" in i]
    assert os.fsencode(odd) == b"db/caf\xe9.jpg"  # the bytes survive (surrogateescape)
    assert load_image(bench.path(odd)).size == (80, 60)
    key = database_key(bench)
    assert len(key["images"]) == 16
    os.remove(raw)
    assert database_key(load_manifest(collection))["images"] != key["images"]


def test_gif_is_indexed_by_its_first_frame(collection):
    from claid.images import load_image

    frames = [Image.new("RGB", (40, 30), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(collection / "db" / "anim.gif", save_all=True, append_images=frames[1:])
    bench = load_manifest(collection)
    assert "db/anim.gif" in bench.database
    first = np.asarray(load_image(bench.path("db/anim.gif")))
    assert first.shape == (30, 40, 3) and tuple(first[0, 0]) == (255, 0, 0)


def test_query_without_positives_is_kept_with_a_warning_naming_its_line(collection, caplog):
    import logging

    _write(collection, {"image": "q/query.jpg", "positives": ["db/b.jpg"]}, {"image": "q/other.png"})
    with caplog.at_level(logging.WARNING):
        bench = load_manifest(collection)
    assert [q.positives for q in bench.queries] == [["db/b.jpg"], []]
    assert "1 of 2 queries have no positives (queries.jsonl:2)" in caplog.text
