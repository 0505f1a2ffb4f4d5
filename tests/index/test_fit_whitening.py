import numpy as np
import pytest

from claid.index import build_index, load_whitening
from claid.index.fit_whitening import fit_whitening_from_store, main, sample_rows
from claid.store import RegionStoreWriter
from claid.structures import RegionDescriptors

from .conftest import clustered_vectors


def chunked(vectors: np.ndarray, sizes: list[int]):
    start = 0
    for size in sizes:
        yield start, vectors[start : start + size]
        start += size


def test_sample_rows_draws_the_same_rows_whatever_the_chunking():
    vectors = np.arange(100 * 3, dtype=np.float32).reshape(100, 3)
    a = sample_rows(chunked(vectors, [100]), 100, 30, seed=4)
    b = sample_rows(chunked(vectors, [7, 0, 50, 43]), 100, 30, seed=4)
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a[:, 0])) == 30 and np.all(np.diff(a[:, 0]) > 0)
    np.testing.assert_array_equal(sample_rows(chunked(vectors, [60, 40]), 100, None), vectors)
    with pytest.raises(ValueError, match="hold 60 rows, expected 100"):
        sample_rows(chunked(vectors[:60], [60]), 100, 10)


def write_store(path, vectors: np.ndarray, per_image: int = 10) -> None:
    writer = RegionStoreWriter(
        path, config={"dataset": path.name}, dim=vectors.shape[1], dtype="float16", shard_size=3
    )
    for i, start in enumerate(range(0, len(vectors), per_image)):
        block = vectors[start : start + per_image]
        n = len(block)
        writer.add(
            RegionDescriptors(
                image_id=f"{i}.jpg",
                image_size=(100, 100),
                boxes=np.tile(np.float32([0, 0, 10, 10]), (n, 1)),
                masks=np.ones((n, 2, 2), dtype=bool),
                depth=np.ones(n, dtype=np.int64),
                parent=np.full(n, -1, dtype=np.int64),
                vectors=block,
            ),
            cell=(50.0, 50.0),
        )
    writer.flush()


def test_whitening_fitted_on_one_store_used_for_another(tmp_path):
    write_store(tmp_path / "instre", clustered_vectors(400, 24, seed=1))
    out = tmp_path / "instre_pca.npz"
    main([str(tmp_path / "instre"), str(out), "--dim", "16", "--train-size", "300"])
    whitening = load_whitening(out)
    assert whitening["n_fit"] == 300 and whitening["proj"].shape == (24, 16)
    assert whitening["fitted_on"].startswith("instre (config ")
    other = clustered_vectors(200, 24, seed=2)
    index = build_index(other, whitening="file", whitening_file=out)
    assert index.dim == 16 and index.meta["whitening"]["n_fit"] == 300
    with pytest.raises(ValueError, match="variance in only"):
        fit_whitening_from_store(tmp_path / "instre", tmp_path / "x.npz", train_size=5, dim=8)
