"""Indexing streams from the store: same index as from the full array, and a store
whose float32 copy exceeds a memory cap still passes through the stages."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import claid
from claid.index import RegionIndex, build_index
from claid.index.chunked_build import training_rows
from claid.index.search_table import region_table
from claid.store.generated import write_synthetic_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_synthetic_store(str(tmp_path_factory.mktemp("store") / "s"), n_images=300,
                                 regions_per_image=7, dim=32, shard_size=64)


def test_table_streams_the_store_rows_then_the_extra_rows(store):
    whole = store.whole_image_vectors(np.float32)
    table = region_table(store, whole)
    assert table.n_rows == store.num_regions + store.num_images
    chunks = list(table.vector_chunks(rows=500))
    assert all(c.dtype == np.float32 and len(c) <= 500 for _, c in chunks)
    assert [s for s, _ in chunks] == sorted(s for s, _ in chunks)
    streamed = np.concatenate([c for _, c in chunks])
    np.testing.assert_array_equal(streamed[: store.num_regions], store.vectors(np.float32))
    np.testing.assert_array_equal(streamed[store.num_regions :], whole)
    rows = np.array([0, 5, store.num_regions - 1, store.num_regions, table.n_rows - 1])
    np.testing.assert_array_equal(table.gather(rows), streamed[rows])
    with pytest.raises(ValueError, match="sorted"):
        table.gather(rows[::-1])


def test_whole_image_rows_left_in_the_store_make_the_same_tables(store):
    from claid.index.search_table import whole_image_table

    rows, array = store.whole_image_rows(), store.whole_image_vectors()
    for make in (lambda w: region_table(store, w), lambda w: whole_image_table(store, w)):
        streamed, loaded = make(rows), make(array)
        assert streamed.extra_vectors is rows  # not read into memory
        assert streamed.n_rows == loaded.n_rows and streamed.stored_dtype == np.float16
        a, b = list(streamed.vector_chunks(rows=77)), list(loaded.vector_chunks(rows=77))
        np.testing.assert_array_equal(np.concatenate([c for _, c in a]), np.concatenate([c for _, c in b]))
        assert [s for s, _ in a] == sorted(s for s, _ in a)
        picked = np.arange(0, streamed.n_rows, 13)
        np.testing.assert_array_equal(streamed.gather(picked), loaded.gather(picked))


@pytest.mark.parametrize("settings", [
    {"factory": "Flat"},
    {"factory": "Flat", "whitening": "database", "whitening_dim": 16},
    {"factory": "IVF8,Flat", "nprobe": 3, "train_size": 1000},
    {"factory": "IVF8,PQ4x4", "whitening": "database", "whitening_dim": 16, "train_size": 900},
])
def test_streamed_build_equals_the_in_memory_build(store, settings):
    table = region_table(store, store.whole_image_vectors(np.float32))
    queries = table.gather(np.arange(0, table.n_rows, 97)) + 0.01
    streamed = build_index(table, seed=3, add_block=256, **settings)
    in_memory = RegionIndex.build(table.vectors(), seed=3, **settings)
    assert streamed.ntotal == in_memory.ntotal == table.n_rows
    sims_a, ids_a = streamed.search(queries, 10)
    sims_b, ids_b = in_memory.search(queries, 10)
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_allclose(sims_a, sims_b, rtol=1e-5, atol=1e-6)


def test_training_rows_are_the_in_memory_sample():
    rows = training_rows(1000, 10, seed=4)
    want = np.sort(np.random.default_rng(4).choice(1000, size=10, replace=False))
    np.testing.assert_array_equal(rows, want)
    np.testing.assert_array_equal(training_rows(5, None, 0), np.arange(5))


# The stages after extraction, in a child process whose anonymous resident memory
# (RssAnon: what malloc and numpy hold, not the pages of the memory-mapped store,
# which the kernel can drop) the parent samples from /proc until the child exits.
_CHILD = textwrap.dedent("""
    import json, pathlib, sys
    import numpy as np
    from claid.index import build_index
    from claid.index.search_table import region_table
    from claid.index.index_stage import IndexSettings, index_stage, search_stage
    from claid.evaluation.detection_stage import boxes_by_image
    from claid.store import RegionStore
    from claid.structures import Query

    store_dir, cache_dir, index = sys.argv[1:4]
    warm = np.random.default_rng(0).normal(size=(700, 64)).astype(np.float32)
    build_index(warm, factory="IVF2,PQ4x4", whitening="database").search(warm[:5], 5)
    store = RegionStore.open(store_dir)
    node = json.loads(index)
    settings = IndexSettings(node={k: v for k, v in node.items() if k != "k"}, seed=0, k=node.get("k"))
    queries = [Query(image=None, box=None, positives=[], junk=[], qid=f"q{i}") for i in range(50)]
    query_vectors = np.asarray(next(store.vector_chunks())[1][:50], np.float32)
    base = int(next(l for l in open("/proc/self/status") if l.startswith("RssAnon")).split()[1])
    table = region_table(store, None)
    index, _ = index_stage(settings, table, {"regions": "test"}, pathlib.Path(cache_dir))
    rankings = search_stage(index, table, query_vectors, queries, settings.k, 0.02)
    boxes = boxes_by_image(store)
    print(json.dumps({"regions": store.num_regions, "rankings": len(rankings),
                      "first": rankings[0].images[:1], "images": len(boxes), "base_kb": base}))
""")


def _run_sampled(child: str, store, cache_dir, index: dict) -> tuple[dict, float]:
    """Run ``child``; return its JSON line and its peak RssAnon above its own baseline
    (taken after the imports and a tiny warm-up build), in MiB."""
    root = str(Path(claid.__file__).resolve().parents[1])  # this checkout's claid
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "PYTHONPATH": root}
    proc = subprocess.Popen([sys.executable, "-c", child, store.store_dir, str(cache_dir),
                             json.dumps(index)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    peak_kb = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as status:
                line = next((x for x in status if x.startswith("RssAnon")), None)
        except (FileNotFoundError, ProcessLookupError):
            break
        if line:
            peak_kb = max(peak_kb, int(line.split()[1]))
        time.sleep(0.0005)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    result = json.loads(out)
    return result, (peak_kb - result["base_kb"]) / 1024


_N_IMAGES, _REGIONS, _DIM = 3000, 20, 384  # 60k regions: 88 MiB float32, 44 MiB on disk


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    return write_synthetic_store(str(tmp_path_factory.mktemp("big") / "s"), n_images=_N_IMAGES,
                                 regions_per_image=_REGIONS, dim=_DIM)


COMPRESSED = {"_target_": "claid.index.build_index", "_partial_": True, "factory": "IVF16,PQ16x4",
              "whitening": "database", "whitening_dim": 64, "nprobe": 4, "train_size": 2000, "add_block": 4096,
              "k": 100}
FLAT = {"_target_": "claid.index.build_index", "_partial_": True, "factory": "Flat",
        "add_block": 4096, "k": None}


def test_a_store_larger_than_the_cap_is_indexed_and_searched(big_store, tmp_path):
    float32_mb = big_store.num_regions * _DIM * 4 / 2**20
    # compressed index: the whole pass (table, training, adding, search) in less than
    # half the float32 copy of the store
    result, used_mb = _run_sampled(_CHILD, big_store, tmp_path / "c", COMPRESSED)
    assert result["regions"] == _N_IMAGES * _REGIONS and result["rankings"] == 50
    assert result["first"] == ["img/0.jpg"] and result["images"] == _N_IMAGES
    assert used_mb < float32_mb / 2, f"{used_mb:.0f} MiB for a {float32_mb:.0f} MiB float32 store"
    # exact index: the index is the float32 copy, and little more than a chunk beside it
    # (a normalised full copy, or FAISS growing its buffer, needs twice as much)
    result, used_mb = _run_sampled(_CHILD, big_store, tmp_path / "f", FLAT)
    assert result["first"] == ["img/0.jpg"]
    assert used_mb < float32_mb * 1.5, f"{used_mb:.0f} MiB for a {float32_mb:.0f} MiB index"


def test_the_sampled_peak_sees_a_float32_copy_of_the_store(big_store, tmp_path):
    """The same child, with a stage that holds the collection in float32, is caught."""
    float32_mb = big_store.num_regions * _DIM * 4 / 2**20
    child = _CHILD.replace("table = region_table(store, None)",
                           "table = region_table(store, None); copy = store.vectors(np.float32)")
    _, used_mb = _run_sampled(child, big_store, tmp_path / "c", COMPRESSED)
    assert used_mb > float32_mb / 2


def test_whole_image_rows_stay_in_their_stored_dtype(store):
    from claid.index.search_table import whole_image_table

    whole16 = store.whole_image_vectors()  # float16, as stored
    table = whole_image_table(store, whole16)
    assert table.extra_vectors.dtype == np.float16  # no float32 copy of the collection
    start, chunk = next(table.vector_chunks(rows=100))
    assert start == 0 and chunk.dtype == np.float32
    np.testing.assert_array_equal(chunk, whole16[:100].astype(np.float32))
    assert build_index(table).ntotal == store.num_images
