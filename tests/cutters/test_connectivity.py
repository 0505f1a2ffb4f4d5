import numpy as np
import pytest

from claid.cutters.connectivity import average_connectivity, node_degrees


def _brute_force_degrees(unit, idx, alpha):
    cos = unit[idx].astype(np.float64) @ unit[idx].T.astype(np.float64)
    adjacency = cos > alpha
    np.fill_diagonal(adjacency, False)
    return adjacency.sum(1), adjacency


@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.5])
def test_node_degrees_match_brute_force(small_gram, alpha):
    unit, gram, _ = small_gram
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(unit.shape[0], 90, replace=False)).astype(np.int64)
    degrees, min_cos = node_degrees(gram, idx, alpha)
    expected, _ = _brute_force_degrees(unit, idx, alpha)
    np.testing.assert_array_equal(degrees, expected)
    sub = gram[np.ix_(idx, idx)].astype(np.float64)
    np.fill_diagonal(sub, np.inf)
    assert min_cos == pytest.approx(sub.min(), abs=1e-6)


def test_average_connectivity_paper_and_code_forms(small_gram):
    unit, gram, _ = small_gram
    idx = np.arange(0, 120, dtype=np.int64)
    degrees, _ = node_degrees(gram, idx, 0.2)
    _, adjacency = _brute_force_degrees(unit, idx, 0.2)
    n = idx.size
    edges = np.triu(adjacency, 1).sum()  # c(S) of Eq. (8), pairs i < j
    assert average_connectivity(degrees) == pytest.approx(2 * edges / (n * (n - 1)))
    assert average_connectivity(degrees, count_diagonal=True) == pytest.approx(
        (2 * edges + n) / (n * (n - 1))
    )


def test_connectivity_extremes():
    full = np.full(5, 4, dtype=np.int64)  # complete graph on 5 nodes
    assert average_connectivity(full) == 1.0
    assert average_connectivity(np.zeros(5, dtype=np.int64)) == 0.0
    assert average_connectivity(np.zeros(1, dtype=np.int64)) == 1.0
