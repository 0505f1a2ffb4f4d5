"""INRIA Holidays: groups from file numbers."""

from __future__ import annotations

import pytest

from claid.datasets import DatasetFormatError
from claid.datasets.holidays import load_holidays
from claid.evaluation.protocols import resolve_protocol


@pytest.fixture
def holidays(tmp_path, image_writer):
    for n in (100000, 100001, 100002, 100100, 100101, 149900, 149901):
        image_writer(tmp_path / "jpg" / f"{n}.jpg")
    return tmp_path


def test_queries_are_numbers_divisible_by_100(holidays):
    bench = load_holidays(holidays, copy="rotated")
    assert [q.image for q in bench.queries] == [
        "jpg/100000.jpg",
        "jpg/100100.jpg",
        "jpg/149900.jpg",
    ]
    assert bench.queries[0].positives == ["jpg/100001.jpg", "jpg/100002.jpg"]
    assert bench.queries[2].positives == ["jpg/149901.jpg"]
    assert all(q.box is None for q in bench.queries)
    assert len(bench.database) == 7  # every image stays searchable
    p = bench.protocol
    assert p["family"] == "trapezoid" and p["copy"] == "rotated" and p["query"] == "full"
    assert p["remove_query_image"] == "always" and not p["remove_queries_from_db"]
    assert resolve_protocol(bench.protocol).family == bench.protocol["family"]


def test_bad_names_and_groups(holidays, image_writer):
    image_writer(holidays / "jpg" / "100200x.jpg")
    with pytest.raises(DatasetFormatError, match="six-digit"):
        load_holidays(holidays)
    (holidays / "jpg" / "100200x.jpg").unlink()
    image_writer(holidays / "jpg" / "100201.jpg")  # group 1002 without its query
    with pytest.raises(DatasetFormatError, match="group 1002"):
        load_holidays(holidays)
    with pytest.raises(ValueError, match="copy"):
        load_holidays(holidays, copy="upright")
