import numpy as np
import pytest
import scipy.linalg

from claid.cutters.affinity import gram_matrix, normalise_rows
from claid.cutters.connectivity import node_degrees
from claid.cutters.ncut import fiedler_vector, ncut_bisect


@pytest.mark.parametrize("n", [40, 150])
def test_fiedler_vector_solves_the_generalised_problem(n):
    rng = np.random.default_rng(n)
    weights = np.where(rng.random((n, n)) < 0.3, 1.0, 1e-5)
    weights = np.maximum(weights, weights.T)
    degree = np.diag(weights.sum(1))
    _, vectors = scipy.linalg.eigh(degree - weights, degree, subset_by_index=[1, 1])
    expected = vectors[:, 0]
    y = fiedler_vector(weights, rng=np.random.default_rng(0))
    cosine = abs(y @ expected) / (np.linalg.norm(y) * np.linalg.norm(expected))
    assert cosine == pytest.approx(1.0, abs=1e-5)


def test_ncut_separates_two_clusters_and_names_the_denser_half():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(16), rng.standard_normal(16)
    tokens = np.concatenate(
        [a + 0.3 * rng.standard_normal((90, 16)), b + 0.3 * rng.standard_normal((60, 16))]
    )
    gram = gram_matrix(normalise_rows(tokens.astype(np.float32)))
    idx = np.arange(150, dtype=np.int64)
    degrees, _ = node_degrees(gram, idx, 0.2)
    labels = ncut_bisect(gram, idx, degrees, alpha=0.2, state=3)
    assert set(labels[:90]) == {labels[0]} and set(labels[90:]) == {1 - labels[0]}
    assert labels[int(np.argmax(degrees))] == 0


def test_ncut_is_deterministic():
    rng = np.random.default_rng(1)
    gram = gram_matrix(normalise_rows(rng.standard_normal((200, 8)).astype(np.float32)))
    idx = np.arange(200, dtype=np.int64)
    degrees, _ = node_degrees(gram, idx, 0.2)
    first = ncut_bisect(gram, idx, degrees, state=5)
    np.testing.assert_array_equal(first, ncut_bisect(gram, idx, degrees, state=5))
    with pytest.raises(ValueError):
        ncut_bisect(gram, idx[:1], degrees[:1])
