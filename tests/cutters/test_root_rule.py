"""cut_root: the authors' code always bisects the root; the paper's wording applies tau1 to it."""

import numpy as np
import pytest

from claid.cutters import CutSettings, cut_regions
from claid.cutters.affinity import gram_matrix, high_energy_mask, normalise_rows
from claid.cutters.hierarchy import decompose
from claid.cutters.reference import reference_cut_regions

GRID = (20, 24)


def _uniform_tokens(seed: int) -> np.ndarray:
    """(480, 32) tokens around one direction: every pairwise cosine > 0.6 > alpha, so the
    root's connectivity cbar is exactly 1.0 (>= tau1), yet no two tokens are identical."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(32)
    noise = rng.standard_normal((GRID[0] * GRID[1], 32)) * 0.35 * np.linalg.norm(base) / np.sqrt(32)
    return (base + noise).astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
def test_uniform_map_root_is_cut_only_when_always(seed):
    tokens = _uniform_tokens(seed)
    unit = normalise_rows(tokens)
    gram = gram_matrix(unit)
    assert gram.min() > 0.6  # every pair is an edge at alpha = 0.2
    high = high_energy_mask(tokens, 0.3)

    tree, trace = decompose(gram, high, GRID, CutSettings(cut_root="always"))
    assert trace[0].connectivity == 1.0 and trace[0].cut  # cut although cbar >= tau1
    assert tree.n_cuts == 1  # its children are fully connected too: no further cut
    assert len(tree) >= 2 and np.all(tree.depth == 1) and np.all(tree.parent == -1)
    assert not (tree.masks.sum(axis=0) > 1).any()  # the two halves' pieces do not overlap

    tree, trace = decompose(gram, high, GRID, CutSettings(cut_root="tau1"))
    assert len(trace) == 1 and not trace[0].cut
    assert len(tree) == 0 and tree.n_cuts == 0 and tree.n_nodes == 1


def test_default_follows_the_authors_code():
    tokens = _uniform_tokens(0)
    default = cut_regions(tokens, GRID)
    always = cut_regions(tokens, GRID, cut_root="always")
    np.testing.assert_array_equal(default.masks, always.masks)
    assert len(default) > 0


@pytest.mark.parametrize("rule", ["always", "tau1"])
def test_rule_matches_the_slow_reference(rule):
    tokens = _uniform_tokens(1)
    fast = cut_regions(tokens, GRID, cut_root=rule)
    slow = reference_cut_regions(tokens, GRID, cut_root=rule)
    assert (fast.n_cuts, fast.n_nodes) == (slow.n_cuts, slow.n_nodes)
    np.testing.assert_array_equal(fast.masks, slow.masks)


def test_rule_does_not_matter_below_tau1(small_maps):
    # planted maps have a loosely connected root: both rules cut it, the trees are equal
    for planted in small_maps[:2]:
        a = cut_regions(planted.tokens, planted.grid, cut_root="always")
        b = cut_regions(planted.tokens, planted.grid, cut_root="tau1")
        np.testing.assert_array_equal(a.masks, b.masks)


def test_max_depth_cuts_the_root_under_either_rule():
    tokens = _uniform_tokens(2)
    for rule in ("always", "tau1"):
        assert cut_regions(tokens, GRID, cut_root=rule, max_depth=1).n_cuts == 1


def test_unknown_rule_is_an_error():
    with pytest.raises(ValueError, match="cut_root"):
        CutSettings(cut_root="never")
