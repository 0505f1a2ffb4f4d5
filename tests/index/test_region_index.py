import json
import logging

import faiss
import numpy as np
import pytest
from faiss.contrib.evaluation import knn_intersection_measure

from claid.index import RegionIndex, build_index, fit_pca_whitening, save_whitening

from .conftest import clustered_vectors


def brute_force(database, queries, k):
    sims = queries @ database.T
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, ids, axis=1), ids


def test_flat_search_is_exact_cosine(database, queries):
    index = build_index(database)
    sims, ids = index.search(queries * 5.0, 10)  # queries are L2-normalised first
    ref_sims, ref_ids = brute_force(database, queries, 10)
    assert sims.dtype == np.float32 and ids.dtype == np.int64
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)
    assert np.mean(ids == ref_ids) > 0.99  # only float ties may swap


def test_k_larger_than_store_pads(queries):
    small = clustered_vectors(5, 32, seed=3)
    sims, ids = build_index(small).search(queries[:2], 8)
    assert sims.shape == ids.shape == (2, 8)
    assert np.all(ids[:, 5:] == -1) and np.all(np.isneginf(sims[:, 5:]))
    assert sorted(ids[0, :5]) == [0, 1, 2, 3, 4]


def test_k_none_ranks_every_region(database, queries):
    index = build_index(database)
    sims, ids = index.search(queries, None)
    assert sims.shape == (len(queries), len(database))
    ref_sims, _ = brute_force(database, queries, len(database))
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)
    assert np.all(np.sort(ids, axis=1) == np.arange(len(database)))


def test_k_none_needs_exact_index(database, queries):
    index = build_index(database, factory="IVF16,Flat", nprobe=4)
    with pytest.raises(ValueError, match="exact 'Flat'"):
        index.search(queries, None)


def test_empty_store_searches_return_nothing(queries):
    index = build_index(np.zeros((0, 32), np.float32), factory="IVF16,PQ8", whitening="database")
    assert index.ntotal == 0 and index.meta["fallback"]["requested"] == "IVF16,PQ8"
    sims, ids = index.search(queries, 5)
    assert np.all(ids == -1)
    assert index.search(queries, None)[1].shape == (len(queries), 0)


def test_nan_and_wrong_dimension_queries_are_errors(database, queries):
    index = build_index(database)
    bad = queries.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        index.search(bad, 5)
    with pytest.raises(ValueError, match="dimension 32"):
        index.search(queries[:, :16], 5)
    with pytest.raises(ValueError, match="k must be"):
        index.search(queries, 0)


def test_misspelled_or_inapplicable_settings_are_errors(database):
    with pytest.raises(TypeError):
        build_index(database, nprobes=4)
    with pytest.raises(ValueError, match="nprobe=4 does not apply"):
        build_index(database, nprobe=4)
    with pytest.raises(ValueError, match="refine_factor=2 does not apply"):
        build_index(database, factory="HNSW8", refine_factor=2)
    with pytest.raises(ValueError, match="whitening must be"):
        build_index(database, whitening="pca")
    with pytest.raises(ValueError, match="FAISS cannot build"):
        build_index(database, factory="IVF16,PQ5")  # 32 is not a multiple of 5


def test_too_few_training_vectors_fall_back_loudly(database, caplog):
    with caplog.at_level(logging.WARNING):
        index = build_index(database[:500], factory="IVF64,Flat", nprobe=8)
    assert "falling back" in caplog.text
    assert index.is_exact and index.meta["factory"] == "Flat"
    assert index.meta["fallback"]["requested"] == "IVF64,Flat"
    with pytest.raises(ValueError, match="needs 2496 training vectors"):
        build_index(database[:500], factory="IVF64,Flat", fallback=None)


def test_ivfpq_settings_on_a_small_collection_fall_back_before_whitening(caplog):
    # conf/index/ivfpq.yaml on 120 regions: IVF1024 needs 39936 training vectors and a
    # 256-d whitening needs variance in 256 directions; 120 vectors have neither
    small = clustered_vectors(120, 384, seed=3)
    with caplog.at_level(logging.WARNING):
        index = build_index(small, factory="IVF1024,PQ64", whitening="database",
                            whitening_dim=256, nprobe=16, train_size=100000)
    assert "falling back" in caplog.text and "whitening_dim=256 capped to 119" in caplog.text
    assert index.is_exact and index.meta["factory"] == "Flat" and index.ntotal == 120
    assert index.meta["whitening"]["dim_capped"] == {"requested": 256, "used": 119}
    assert index.meta["dim"] == 119
    _, ids = index.search(small[:3], k=1)
    assert ids[:, 0].tolist() == [0, 1, 2]  # exact search finds each vector
    # a fallback whose whitening can have the asked dimension keeps it exactly
    capped = build_index(small, factory="IVF1024,PQ8", whitening="database", whitening_dim=32)
    assert capped.meta["dim"] == 32 and "dim_capped" not in capped.meta["whitening"]


@pytest.mark.parametrize(
    "factory, narrow, wide, min_recall",
    [
        # Measured on this data: 0.82 / 0.35 / 0.92 (chance level: 20 / 3000).
        ("IVF16,Flat", {"nprobe": 4}, {"nprobe": 16}, 0.75),
        ("IVF16,PQ8x4", {"nprobe": 4}, {"nprobe": 16}, 0.25),
        ("HNSW16", {"ef_search": 64}, {"ef_search": 256}, 0.85),
        # Re-ranking 8k PQ candidates with the exact vectors: 0.35 -> 0.88.
        (
            "IVF16,PQ8x4,Refine(Flat)",
            {"nprobe": 4, "refine_factor": 1},
            {"nprobe": 16, "refine_factor": 8},
            0.25,
        ),
    ],
)
def test_approximate_indexes_against_exact(database, queries, factory, narrow, wide, min_recall):
    k = 20
    _, ref_ids = build_index(database).search(queries, k)
    approx = build_index(database, factory=factory, **narrow)
    assert approx.meta["fallback"] is None and not approx.is_exact
    recall = knn_intersection_measure(approx.search(queries, k)[1], ref_ids)
    assert recall >= min_recall, f"{factory}: intersection recall@{k} {recall:.3f}"
    # A wider search finds at least as much; visiting every IVF-Flat cell is exact.
    approx.set_search_params(**wide)
    wide_recall = knn_intersection_measure(approx.search(queries, k)[1], ref_ids)
    assert wide_recall >= recall - 0.01
    if factory == "IVF16,Flat":
        assert wide_recall > 0.99
    if "Refine" in factory:
        assert wide_recall > 0.8


def test_train_then_add_in_blocks_equals_build(database, queries):
    cfg = dict(factory="IVF16,Flat", nprobe=4, whitening="database", whitening_dim=16, seed=3)
    built = build_index(database, **cfg)
    staged = RegionIndex.train(database, **cfg)
    for start in range(0, len(database), 700):
        staged.add(database[start : start + 700])
    a, b = built.search(queries, 10), staged.search(queries, 10)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)  # blocked matmuls round differently


def test_database_whitening_changes_the_geometry(database, queries):
    index = build_index(database, whitening="database", whitening_dim=16)
    assert index.dim_in == 32 and index.dim == 16
    transformed = index.transform(database)
    np.testing.assert_allclose(np.linalg.norm(transformed, axis=1), 1, rtol=1e-5)
    sims, ids = index.search(queries, 5)
    ref = index.transform(queries) @ transformed.T
    np.testing.assert_allclose(sims[:, 0], ref.max(axis=1), atol=1e-5)


def test_whitening_from_another_dataset(tmp_path, database, queries):
    other = clustered_vectors(1000, 32, seed=11)
    path = save_whitening(tmp_path / "other.npz", fit_pca_whitening(other, dim=24, fitted_on="B"))
    index = build_index(database, whitening="file", whitening_file=path)
    assert index.dim == 24 and index.meta["whitening"]["fitted_on"] == "B"
    assert len(index.meta["whitening"]["file_sha256"]) == 64
    with pytest.raises(ValueError, match="projects to 24"):
        build_index(database, whitening="file", whitening_file=path, whitening_dim=10)
    with pytest.raises(ValueError, match="needs whitening_file"):
        build_index(database, whitening="file")


@pytest.mark.parametrize(
    "cfg",
    [
        {},
        {"whitening": "database", "whitening_dim": 20},
        {"factory": "IVF16,PQ8x4", "nprobe": 5},
        {"factory": "HNSW16", "ef_search": 40},
        {"factory": "IVF16,PQ8x4,Refine(Flat)", "nprobe": 3, "refine_factor": 5},
    ],
)
def test_save_load_round_trip(tmp_path, database, queries, cfg):
    index = build_index(database, store_hash="abc123", **cfg)
    folder = index.save(tmp_path / "regions.index", provenance={"dataset": "synthetic"})
    record = json.loads((folder / "index.json").read_text())
    assert record["store_hash"] == "abc123" and record["ntotal"] == len(database)
    assert record["schema_version"] == 1 and record["provenance"] == {"dataset": "synthetic"}
    assert record["faiss_version"] == faiss.__version__
    loaded = RegionIndex.load(folder)
    for before, after in zip(index.search(queries, 10), loaded.search(queries, 10)):
        np.testing.assert_array_equal(before, after)
    assert loaded.meta["params"] == index.meta["params"]
    assert [p.name for p in tmp_path.iterdir()] == ["regions.index"]  # no temp folders left


def test_save_refuses_to_clobber_and_load_checks(tmp_path, database):
    index = build_index(database[:100])
    folder = index.save(tmp_path / "idx")
    with pytest.raises(FileExistsError):
        index.save(folder)
    build_index(database[:200]).save(folder, overwrite=True)
    assert RegionIndex.load(folder).ntotal == 200
    record = json.loads((folder / "index.json").read_text())
    record["schema_version"] = 99
    (folder / "index.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="schema 99"):
        RegionIndex.load(folder)
    with pytest.raises(FileNotFoundError, match="not a claid index"):
        RegionIndex.load(tmp_path / "nothing")
