from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy import ndimage

from claid import cut_regions as lazily_exported
from claid.cutters import CutSettings, cut_regions, decompose
from claid.cutters.affinity import gram_matrix, high_energy_mask, normalise_rows
from claid.cutters.planted import best_iou, planted_token_map
from claid.cutters.reference import reference_cut_regions


def _trace(planted, **params):
    unit = normalise_rows(planted.tokens)
    settings = CutSettings(**params)
    high = high_energy_mask(planted.tokens, settings.energy_quantile)
    return decompose(gram_matrix(unit), high, planted.grid, settings)


def test_public_api_is_lazily_exported():
    assert lazily_exported is cut_regions


@pytest.mark.parametrize("cutter", ["ksums", "ncut"])
def test_output_regions_are_connected_big_and_energetic(small_maps, cutter):
    for planted in small_maps:
        tree = cut_regions(planted.tokens, planted.grid, cutter=cutter, min_patches=10)
        high = high_energy_mask(planted.tokens, 0.3).reshape(planted.grid)
        assert len(tree) > 0
        for r, mask in enumerate(tree.masks):
            _, n_pieces = ndimage.label(mask, structure=np.ones((3, 3)))
            assert n_pieces == 1
            assert mask.sum() >= 10
            share = (mask & high).sum() / mask.sum()
            assert share > 0.2
            assert tree.energy_share[r] == pytest.approx(share)


def test_tree_fields_are_consistent(small_maps):
    for planted in small_maps:
        tree = cut_regions(planted.tokens, planted.grid, min_patches=8)
        h, w = planted.grid
        assert tree.masks.shape == (len(tree), h, w) and tree.masks.dtype == bool
        assert tree.boxes.dtype == np.int64 and tree.grid == (h, w)
        for r, mask in enumerate(tree.masks):
            rows, cols = np.nonzero(mask)
            x1, y1, x2, y2 = tree.boxes[r]
            assert (x1, y1, x2, y2) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
            p = tree.parent[r]
            assert -1 <= p < r  # breadth first: parents come first
            assert tree.depth[r] >= 1
            if p >= 0:
                assert tree.depth[p] < tree.depth[r]
                assert not (mask & ~tree.masks[p]).any()  # a child lies inside its parent
        assert np.all(np.diff(tree.depth) >= 0)
        assert tree.n_nodes >= len(tree) + 1 and tree.n_cuts >= 1


@pytest.mark.parametrize("max_depth", [None, 3])
def test_uncut_leaves_are_connected_enough_or_too_small(small_maps, max_depth):
    for planted in small_maps:
        tree, trace = _trace(planted, min_patches=8, tau1=0.95, max_depth=max_depth)
        assert trace[0].depth == 0 and trace[0].output == -1  # the root is never output
        assert tree.n_nodes == len(trace)
        assert tree.n_cuts == sum(node.cut for node in trace)
        for node in trace:
            if node.cut:
                assert node.size >= 8
                if node.n_children == 0:  # cut, but every piece fell below min_patches
                    assert node.largest_piece < 8
                if max_depth is None:  # the root is cut whatever its cbar (cut_root="always")
                    assert node.connectivity < 0.95 or node.depth == 0
                else:
                    assert node.depth < max_depth
            elif max_depth is None:
                assert node.connectivity >= 0.95 or node.size < 8, node
            else:
                assert node.depth == max_depth or node.size < 8, node


def test_fixed_depth_stops_at_the_depth_given(small_maps):
    for planted in small_maps[:3]:
        for depth in (1, 2, 4):
            tree = cut_regions(
                planted.tokens, planted.grid, max_depth=depth, filter_dummies=False, min_patches=5
            )
            assert tree.depth.max() == depth
        # tau1 is ignored: with tau1 = 0 the adaptive rule would never cut
        fixed = cut_regions(planted.tokens, planted.grid, max_depth=2, tau1=0.0, min_patches=5)
        assert fixed.n_cuts > 1


def test_filter_dummies_off_outputs_every_node_but_the_root(small_maps):
    for planted in small_maps[:3]:
        kept = cut_regions(planted.tokens, planted.grid, min_patches=8)
        everything = cut_regions(planted.tokens, planted.grid, min_patches=8, filter_dummies=False)
        assert len(everything) == everything.n_nodes - 1
        assert everything.n_nodes == kept.n_nodes  # filtering never changes the hierarchy
        assert len(kept) < len(everything)
        assert np.all(everything.parent[everything.depth == 1] == -1)
        assert np.all(everything.parent[everything.depth > 1] >= 0)


def test_tau2_filters_by_energy_share(small_map):
    low = cut_regions(small_map.tokens, small_map.grid, tau2=0.0, min_patches=8)
    high = cut_regions(small_map.tokens, small_map.grid, tau2=0.6, min_patches=8)
    assert np.all(high.energy_share > 0.6)
    assert len(high) < len(low)


@pytest.mark.parametrize("params", [{}, {"init": "random", "seed": 3}, {"cutter": "ncut"}])
def test_seeded_runs_are_deterministic(small_maps, params):
    for planted in small_maps[:3]:
        a = cut_regions(planted.tokens, planted.grid, **params)
        b = cut_regions(planted.tokens, planted.grid, **params)
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.parent, b.parent)


def test_random_init_depends_on_seed():
    planted = planted_token_map((22, 30), 64, seed=0, noise=2.0)
    trees = [
        cut_regions(planted.tokens, planted.grid, init="random", seed=s, min_patches=5)
        for s in range(4)
    ]
    assert len({t.masks.tobytes() for t in trees}) > 1


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"init": "random", "seed": 11},
        {"max_depth": 3, "filter_dummies": False},
        {"tau1": 0.99, "min_patches": 5, "count_diagonal": True},
        {"alpha": 0.3, "tau2": 0.1, "energy_quantile": 0.5},
    ],
)
def test_matches_the_slow_reference(small_maps, params):
    for planted in small_maps[:4]:
        fast = cut_regions(planted.tokens, planted.grid, **params)
        slow = reference_cut_regions(planted.tokens, planted.grid, **params)
        assert (fast.n_cuts, fast.n_nodes, len(fast)) == (slow.n_cuts, slow.n_nodes, len(slow))
        np.testing.assert_array_equal(fast.masks, slow.masks)
        np.testing.assert_array_equal(fast.boxes, slow.boxes)
        np.testing.assert_array_equal(fast.parent, slow.parent)
        np.testing.assert_array_equal(fast.depth, slow.depth)
        np.testing.assert_allclose(fast.connectivity, slow.connectivity, atol=1e-6)
        np.testing.assert_allclose(fast.energy_share, slow.energy_share, atol=1e-6)


def test_ksums_recovers_planted_objects():
    ious = []
    for seed in range(8):
        planted = planted_token_map((22, 30), 384, seed=seed)
        tree = cut_regions(planted.tokens, planted.grid)
        ious.append(best_iou(planted.object_masks, tree.masks))
    recall = np.mean(np.concatenate(ious) >= 0.5)
    assert recall >= 0.85, recall


def test_repeated_instances_come_out_as_separate_regions():
    planted = planted_token_map((22, 30), 384, seed=2, n_objects=3, n_repeated=3)
    tree = cut_regions(planted.tokens, planted.grid)
    ious = best_iou(planted.object_masks, tree.masks)
    assert np.all(ious >= 0.5), ious


@pytest.mark.parametrize("cutter", ["ksums", "ncut"])
def test_thread_pool_gives_the_same_trees(small_maps, cutter):
    sequential = [cut_regions(p.tokens, p.grid, cutter=cutter) for p in small_maps]
    with ThreadPoolExecutor(max_workers=3) as pool:
        threaded = list(
            pool.map(lambda p: cut_regions(p.tokens, p.grid, cutter=cutter), small_maps)
        )
    for a, b in zip(sequential, threaded):
        np.testing.assert_array_equal(a.masks, b.masks)


def test_torch_and_3d_inputs(small_map):
    import torch

    h, w = small_map.grid
    flat = cut_regions(small_map.tokens, small_map.grid)
    cube = cut_regions(torch.from_numpy(small_map.tokens).reshape(h, w, -1))
    np.testing.assert_array_equal(flat.masks, cube.masks)


# --- bad input: a clear ValueError or an empty tree, never a crash ---------------


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_tokens_raise(small_map, bad):
    tokens = small_map.tokens.copy()
    tokens[5, 0] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        cut_regions(tokens, small_map.grid)


def test_grid_mismatch_raises(small_map):
    with pytest.raises(ValueError, match="patches"):
        cut_regions(small_map.tokens, (15, 20))


@pytest.mark.parametrize("cutter", ["ksums", "ncut"])
@pytest.mark.parametrize("max_depth", [None, 4])
def test_constant_tokens_give_an_empty_tree(cutter, max_depth):
    tokens = np.tile(np.linspace(-1, 2, 16, dtype=np.float32), (12 * 14, 1))
    tree = cut_regions(tokens, (12, 14), cutter=cutter, max_depth=max_depth, filter_dummies=False)
    assert len(tree) == 0 and tree.n_cuts == 0 and tree.masks.shape == (0, 12, 14)


def test_fewer_patches_than_min_patches_give_an_empty_tree():
    tokens = np.random.default_rng(0).standard_normal((12, 8)).astype(np.float32)
    tree = cut_regions(tokens, (3, 4), min_patches=15)
    assert len(tree) == 0 and tree.grid == (3, 4)
    assert cut_regions(tokens[:1], (1, 1), min_patches=1).n_cuts == 0


def test_zero_tokens_raise():
    with pytest.raises(ValueError, match="zero L2 norm"):
        cut_regions(np.zeros((20, 4), dtype=np.float32), (4, 5), min_patches=2)


def test_random_noise_tokens_do_not_crash():
    tokens = np.random.default_rng(0).standard_normal((30 * 30, 32)).astype(np.float32)
    for cutter in ("ksums", "ncut"):
        tree = cut_regions(tokens, (30, 30), cutter=cutter)
        assert all(m.sum() >= 15 for m in tree.masks)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"cutter": "kmeans"}, "cutter"),
        ({"init": "seeds"}, "init"),
        ({"tau1": float("nan")}, "tau1"),
        ({"tau2": 1.0}, "tau2"),
        ({"alpha": 1.0}, "alpha"),
        ({"energy_quantile": 0.0}, "energy_quantile"),
        ({"min_patches": 0}, "min_patches"),
        ({"min_patches": 2.5}, "min_patches"),
        ({"max_passes": 0}, "max_passes"),
        ({"max_depth": 0}, "max_depth"),
        ({"seed": -1}, "seed"),
        ({"filter_dummies": "no"}, "filter_dummies"),
    ],
)
def test_bad_parameters_raise(small_map, params, message):
    with pytest.raises(ValueError, match=message):
        cut_regions(small_map.tokens, small_map.grid, **params)


def test_misspelled_parameter_is_an_error(small_map):
    with pytest.raises(TypeError):
        cut_regions(small_map.tokens, small_map.grid, tau_1=0.9)


def test_one_sided_split_ends_the_branch(small_map, monkeypatch):
    import claid.cutters.hierarchy as hierarchy

    monkeypatch.setattr(
        hierarchy, "ncut_bisect", lambda gram, idx, degrees, **_: np.zeros(idx.size, np.int8)
    )
    tree = cut_regions(small_map.tokens, small_map.grid, cutter="ncut")
    assert tree.n_cuts == 1 and tree.n_nodes == 1 and len(tree) == 0
