"""Generated region vectors for the index tests: clustered, so that neighbours exist."""

import faiss
import numpy as np
import pytest


@pytest.fixture(autouse=True, scope="session")
def single_faiss_thread():
    """Tiny arrays gain nothing from threads, and on a shared machine OpenMP's
    spin-waiting makes FAISS k-means up to 40x slower (measured: 20 s vs 0.5 s)."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def clustered_vectors(n: int, dim: int, *, n_clusters: int = 20, seed: int = 0) -> np.ndarray:
    """(n, dim) float32 unit rows around ``n_clusters`` random centres, with an
    anisotropic spread (so that whitening changes something)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    scales = np.linspace(1.5, 0.1, dim)
    vectors = centres[rng.integers(n_clusters, size=n)] + rng.normal(size=(n, dim)) * scales
    vectors = vectors.astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def database() -> np.ndarray:
    return clustered_vectors(3000, 32, seed=1)


@pytest.fixture
def queries() -> np.ndarray:
    return clustered_vectors(50, 32, seed=2)
