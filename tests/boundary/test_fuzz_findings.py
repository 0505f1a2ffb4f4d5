"""What the fuzzers found first beyond the known defects, each pinned by one example:
queries.jsonl and --rerank-set values that gave a traceback, search tables taken as
good, and error lines that echoed a value of thousands of characters."""

import numpy as np
import pytest
from PIL import Image

from claid.artifacts import DamagedArtifactError
from claid.datasets.files import DatasetFormatError
from claid.datasets.manifest import read_queries
from claid.index.search_table import load_search_table
from claid.rerank.cli import RerankUnavailable, parse_methods


@pytest.fixture
def root(tmp_path):
    Image.new("RGB", (30, 20)).save(tmp_path / "a.png")
    return tmp_path


@pytest.mark.parametrize("line, why", [
    (b'{"image": "a.png", "box": [0, 0, 5, ' + b"9" * 400 + b"]}", "is not a list of four numbers"),
    (b'{"image": "a.png", "box": [0, 0, 5, ' + b"9" * 5000 + b"]}", "not usable JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "nested deeper than the JSON reader allows"),
    (b'{"image": "' + b"x" * 100_000 + b'"}', "is not an image under"),
])
def test_a_hostile_queries_line_is_one_short_line(root, line, why):
    (root / "queries.jsonl").write_bytes(line)
    with pytest.raises(DatasetFormatError) as err:
        read_queries(root / "queries.jsonl", root, ["a.png"])
    message = str(err.value)
    assert why in message and "\n" not in message and len(message) < 400


@pytest.mark.parametrize("value", ["\x1f", "!!python/object:os.system {}", "9" * 5000, "[" * 5000])
def test_a_hostile_rerank_set_value_is_one_line(value):
    with pytest.raises(RerankUnavailable) as err:
        parse_methods("dba", [f"dba.n={value}"])
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


@pytest.mark.parametrize("region_image, boxes", [
    (np.array([0, 5]), np.zeros((2, 4), np.float32)),          # an image number past the ids
    (np.array([0, 0]), np.full((2, 4), np.nan, np.float32)),   # NaN boxes
    (np.array([0, 0]), np.zeros((3, 4), np.float32)),          # rows that do not match
])
def test_a_search_table_that_does_not_describe_the_images_is_damaged(tmp_path, region_image, boxes):
    import json

    from claid.index.search_table import SCHEMA_VERSION

    (tmp_path / "search.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION, "image_ids": ["a", "b"],
                                                      "files": {}, "key": {}}))
    np.savez(tmp_path / "regions.npz", region_image=region_image, boxes=boxes)
    with pytest.raises(DamagedArtifactError, match="regions.npz"):
        load_search_table(tmp_path)


@pytest.mark.parametrize("text", ["[" * 100_000, '{"ntotal": 1}', '{"ntotal": 1, "dim": 4, "whitening": [], "params": {}}'])
def test_an_index_json_that_loading_cannot_use_is_a_value_error_a_run_rebuilds(tmp_path, text):
    from claid.index.index_dir import load_index

    (tmp_path / "index.json").write_text(text)
    with pytest.raises(ValueError) as err:
        load_index(tmp_path)
    assert "\n" not in str(err.value) and "rebuild the index" in str(err.value)
