"""Fuzzers of the readers that stay in Python (no C decoder to crash): queries.jsonl,
search.json and its regions.npz, the re-ranking caches' records, cached arrays'
sidecars and the ``--rerank-set`` values. Any generated input loads into valid typed
values or raises the project's one-line error type; nothing else. Examples and seeds:
tests/boundary/fuzz.py."""

import dataclasses
import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from scipy import sparse

from claid.artifacts import DamagedArtifactError
from claid.checksums import load_checked_npy, save_checked_npy
from claid.config.rules import SettingsError
from claid.datasets.files import DatasetFormatError
from claid.datasets.manifest import read_queries
from claid.index.index_dir_check import index_dir_problems
from claid.index.search_table import load_search_table, read_search_meta
from claid.rerank import cache
from claid.rerank.cli import RerankUnavailable, parse_methods

from .fuzz import JSON, NUMBERS, field_value, fuzz_settings, mutated_bytes, one_line

IMAGES = ["a.png", "d/b.png", "c.png"]
SIZE = {"a.png": (20, 30), "d/b.png": (10, 12), "c.png": (20, 30)}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("collection")
    for name in IMAGES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        height, width = SIZE[name]
        Image.new("RGB", (width, height)).save(folder / name)
    return folder


boxes = st.lists(st.one_of(st.integers(-1, 31), st.floats(0, 30), NUMBERS), min_size=4, max_size=4)
records = st.fixed_dictionaries({"image": field_value(st.sampled_from(IMAGES + ["./a.png", "x.png"]))}, optional={
    "box": field_value(boxes), "positives": field_value(st.lists(st.sampled_from(IMAGES), max_size=2)),
    "junk": field_value(st.lists(st.sampled_from(IMAGES), max_size=2)),
    "qid": field_value(st.one_of(st.text(max_size=4), st.integers(0, 3))), "other": JSON})
lines = st.lists(st.one_of(records, records, JSON).map(lambda r: json.dumps(r).encode()), max_size=4)


@fuzz_settings(300)
@given(data=st.data(), body=lines)
def test_queries_jsonl_loads_into_valid_queries_or_is_one_line(root, data, body):
    payload = data.draw(mutated_bytes(b"\n".join(body)))
    path = root / "queries.jsonl"
    path.write_bytes(payload)
    try:
        queries = read_queries(path, root, IMAGES)
    except DatasetFormatError as err:
        one_line(err)
        return
    assert len({q.qid for q in queries}) == len(queries)
    for q in queries:
        assert q.image in IMAGES and isinstance(q.qid, str)
        assert set(q.positives) <= set(IMAGES) and set(q.junk) <= set(IMAGES)
        if q.box is not None:
            height, width = SIZE[q.image]
            x1, y1, x2, y2 = q.box
            assert all(math.isfinite(v) for v in q.box) and 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


SEARCH = {"schema_version": None, "image_ids": IMAGES, "key": {"store": "x"},
          "files": {"index.faiss": {"size": 1, "sha256": "0" * 64}}, "descriptor": {"name": "d", "settings": {}}}


@fuzz_settings(200)
@given(data=st.data(), meta=st.fixed_dictionaries({k: field_value(st.just(v)) for k, v in SEARCH.items()}),
       rows=st.integers(0, 4), image=st.integers(-1, 3), box=st.floats(allow_nan=True))
def test_search_json_and_its_table_load_typed_or_are_one_line(tmp_path_factory, data, meta, rows, image, box):
    from claid.index.search_table import SCHEMA_VERSION

    if meta.get("schema_version") is None:
        meta["schema_version"] = SCHEMA_VERSION
    folder = tmp_path_factory.mktemp("index")
    (folder / "search.json").write_bytes(data.draw(mutated_bytes(json.dumps(meta).encode())))
    np.savez(folder / "regions.npz", region_image=np.full(rows, image, np.int64),
             boxes=np.full((rows, 4), box, np.float32))
    assert all(isinstance(p, str) and "\n" not in p for p in index_dir_problems(folder))
    try:
        found, region_image, table_boxes = load_search_table(folder)
    except DamagedArtifactError as err:
        one_line(err)
        return
    assert found == read_search_meta(folder) and all(isinstance(i, str) for i in found["image_ids"])
    assert region_image.dtype == np.int64 and table_boxes.shape == (len(region_image), 4)
    assert np.isfinite(table_boxes).all() and ((region_image >= 0) & (region_image < len(found["image_ids"]))).all()


KEY = {"source": {"store": "abc"}, "diffusion": {"kd": 3}}


@pytest.fixture(scope="module")
def offline_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cache") / "diffusion-x"
    cache.save_offline(directory, sparse.random(5, 5, density=0.5, format="csr", random_state=0,
                                                dtype=np.float32), KEY, {})
    return directory


@fuzz_settings(200)
@given(data=st.data())
def test_a_cache_record_gives_a_valid_matrix_or_a_rebuild(offline_dir, data):
    path = offline_dir / cache.DIFFUSION_META
    original = path.read_bytes()
    meta = json.loads(original)
    for name in list(meta["files"]):
        if data.draw(st.booleans()):
            meta["files"][name] = data.draw(field_value(st.just(meta["files"][name])))
    if data.draw(st.booleans()):
        meta["files"] = data.draw(field_value(st.just(meta["files"])))
    try:
        path.write_bytes(data.draw(mutated_bytes(json.dumps(meta).encode())))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            matrix = cache.load_offline(offline_dir, KEY, 5)
    finally:
        path.write_bytes(original)
    if matrix is not None:  # reused: exactly what was written
        assert matrix.shape == (5, 5) and np.isfinite(matrix.data).all()
        assert meta["files"] == json.loads(original)["files"]


@fuzz_settings(150)
@given(data=st.data())
def test_a_cached_arrays_sidecar_gives_the_array_or_a_rebuild(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("arrays") / "queries-x.npy"
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    save_checked_npy(path, array, built_from={"store": "x"})
    sidecar = path.with_suffix(".json")
    sidecar.write_bytes(data.draw(st.one_of(mutated_bytes(sidecar.read_bytes()), JSON.map(lambda v: json.dumps(v).encode()))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_checked_npy(path, built_from={"store": "x"})
    assert loaded is None or np.array_equal(loaded, array)


SET_KEYS = ["n", "alpha", "same_image", "block_rows", "kq", "kd", "truncation", "gamma", "tol", "max_iter",
            "aggregate", "block_items", "x"]
values = st.one_of(st.sampled_from(["3", "0", "-1", "1e400", "9" * 5000, "nan", ".inf", "exclude", "max", "[1, 2]",
                                    "{a: 1}", "&a [*a]", "!!python/object:os.system {}", "'", ": :", "\t"]),
                   st.text(max_size=12))


@fuzz_settings(300)
@given(methods=st.lists(st.sampled_from(["dba", "aqe", "diffusion", "none", "x", ""]), max_size=3),
       overrides=st.lists(st.tuples(st.sampled_from(["dba", "aqe", "diffusion", "x"]), st.sampled_from(SET_KEYS),
                                    values), max_size=3))
def test_rerank_set_values_parse_into_valid_settings_or_are_one_line(methods, overrides):
    try:
        parsed = parse_methods(",".join(methods), [f"{m}.{k}={v}" for m, k, v in overrides])
    except (RerankUnavailable, SettingsError) as err:
        one_line(err)
        return
    for method, settings in parsed.items():
        for name, value in dataclasses.asdict(settings).items():
            assert isinstance(value, int | float | str) and not isinstance(value, bool), (method, name, value)
            if isinstance(value, float):
                assert math.isfinite(value), (method, name, value)
