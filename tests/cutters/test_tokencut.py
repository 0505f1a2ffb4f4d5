"""TokenCut / MaskCut core against step-by-step transcriptions of the reference steps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.linalg import eigh

from claid.cutters.planted import planted_token_map
from claid.cutters.tokencut import maskcut_masks, second_eigenvector, tokencut_mask


def _reference_ncut(feats_dn: np.ndarray, tau: float, eps: float = 1e-5):
    """The reference's affinity + eigh steps on (D, N) features, square or not."""
    norm = np.maximum(np.linalg.norm(feats_dn, axis=0, keepdims=True), 1e-12)
    f = feats_dn / norm
    a = f.T @ f
    a = a > tau
    a = np.where(a.astype(float) == 0, eps, a)
    d = np.diag(np.sum(a, axis=1))
    _, vecs = eigh(d - a, d, subset_by_index=[1, 2])
    return vecs[:, 0]


def _reference_tokencut(tokens, dims, tau=0.2):
    vec = _reference_ncut(tokens.T.astype(np.float64), tau)
    bip = vec > np.sum(vec) / len(vec)
    seed = np.argmax(np.abs(vec))
    if bip[seed] != 1:
        bip = np.logical_not(bip)
    objects, _ = ndimage.label(bip.reshape(dims).astype(float))
    cc = objects[np.unravel_index(seed, dims)]
    return objects == cc


def _reference_maskcut(tokens, dims, tau=0.15, n=3):
    feats = tokens.T.astype(np.float64).copy()
    painting = np.zeros(dims)
    out, current = [], None
    for i in range(n):
        if i > 0:
            painting = painting + current
            painting[painting > 0] = 1
            feats = (1 - painting.reshape(-1)) * feats
        vec = _reference_ncut(feats, tau)
        bip = vec > np.sum(vec) / len(vec)
        seed = np.argmax(np.abs(vec))
        b = bip.reshape(dims)
        nc = int(b[0][0]) + int(b[0][-1]) + int(b[-1][0]) + int(b[-1][-1])
        reverse = True if nc >= 3 else bip[seed] != 1
        if reverse:
            bip = np.logical_not(bip)
            seed = np.argmax(-vec)
        else:
            seed = np.argmax(vec)
        objects, _ = ndimage.label(bip.reshape(dims).astype(float))
        pm = (objects == objects[np.unravel_index(seed, dims)]).astype(float)
        if i >= 1:
            inter = np.logical_and(current > 0, pm > 0).sum()
            union = np.logical_or(current > 0, pm > 0).sum()
            if (inter / union if union else 0.0) > 0.5 or pm.sum() / pm.size <= 0.01:
                pm = np.zeros(dims)
        current = pm
        masked_out = 0 if not out else np.sum(out, axis=0)
        m = pm - masked_out
        m[m <= 0] = 0
        out.append(m)
    return [m > 0 for m in out if m.any()]


def _iou(a, b):
    return np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("grid", [(12, 12), (10, 14)])
def test_tokencut_equals_reference_on_planted_maps(seed, grid):
    planted = planted_token_map(grid=grid, dim=64, n_objects=2, n_clutter=0, noise=0.5, seed=seed)
    ours = tokencut_mask(planted.tokens, grid)
    ref = _reference_tokencut(planted.tokens, grid)
    assert ours.shape == grid
    assert ours.any()
    assert _iou(ours, ref) >= 0.99


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("grid", [(12, 12), (10, 14)])
def test_maskcut_equals_reference_on_planted_maps(seed, grid):
    planted = planted_token_map(grid=grid, dim=64, n_objects=3, n_clutter=0, noise=0.5, seed=seed)
    ours = maskcut_masks(planted.tokens, grid, disjoint=True)
    ref = _reference_maskcut(planted.tokens, grid)
    assert len(ours) == len(ref) >= 1
    for a, b in zip(ours, ref):
        assert _iou(a, b) >= 0.99
    # disjoint=True: each mask minus the earlier ones, as maskcut_forward's list holds them
    assert np.sum(ours, axis=0).max() <= 1
    # default: the raw kept cuts; same union, each disjoint part inside a raw mask
    raw = maskcut_masks(planted.tokens, grid)
    assert len(raw) >= len(ours)
    assert np.array_equal(np.any(raw, axis=0), np.any(ours, axis=0))
    for d in ours:
        assert any(not (d & ~r).any() for r in raw)


def test_strict_threshold_and_eps_nonedges():
    # two orthogonal groups: cosine exactly 0 within-cross, 1 within groups
    tokens = np.zeros((16, 2))
    tokens[:8, 0] = 1.0
    tokens[8:, 1] = 1.0
    x = second_eigenvector(tokens, alpha=0.0)
    assert np.sign(x[:8]).min() == np.sign(x[:8]).max()
    assert np.sign(x[:8][0]) != np.sign(x[8:][0])
    # alpha = 1.0 is strict: no edge, not even the diagonal -> constant graph, no split
    x_none = second_eigenvector(tokens, alpha=1.0)
    assert np.isfinite(x_none).all()


def test_maskcut_drop_empties_current_mask_so_the_cut_repeats():
    # one dominant object: cut 2 sees the same graph minus the painted object and
    # repeats it (IoU > 0.5 with current_mask) -> dropped, not painted, current_mask
    # empty; so cut 3 is the same cut again and is kept (the reference's quirk)
    planted = planted_token_map(
        grid=(12, 12), dim=64, n_objects=1, n_repeated=0, n_clutter=0, noise=0.3, seed=0
    )
    two = maskcut_masks(planted.tokens, (12, 12), n_masks=2, disjoint=False)
    three = maskcut_masks(planted.tokens, (12, 12), n_masks=3, disjoint=False)
    assert len(two) == 1
    assert len(three) == 2 and np.array_equal(three[0], three[1])
    assert len(maskcut_masks(planted.tokens, (12, 12), n_masks=3)) == 2  # raw is the default
    # disjoint (maskcut_forward's returned masks): the repeat is subtracted away
    assert len(maskcut_masks(planted.tokens, (12, 12), n_masks=3, disjoint=True)) == 1
    assert len(_reference_maskcut(planted.tokens, (12, 12), n=3)) == 1


def test_bad_grid_is_one_line_error():
    with pytest.raises(ValueError, match="do not fit"):
        tokencut_mask(np.zeros((10, 4)), (3, 3))
    with pytest.raises(ValueError, match="n_masks"):
        maskcut_masks(np.ones((9, 4)), (3, 3), n_masks=0)


@pytest.mark.parametrize("name", ["tokencut", "maskcut"])
def test_cutter_config_builds_a_region_tree(name):
    from pathlib import Path

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from claid.config.checks import check_group_keys
    from claid.structures import PatchGrid

    node = OmegaConf.load(Path(__file__).parents[2] / "conf" / "cutter" / f"{name}.yaml")
    check_group_keys("cutter", node)
    cutter = instantiate(node)
    planted = planted_token_map(grid=(12, 12), dim=64, n_objects=3, n_clutter=0, noise=0.5, seed=1)
    tree = cutter(PatchGrid(tokens=planted.tokens, grid=(12, 12), patch_size=16))
    expected = (
        [tokencut_mask(planted.tokens, (12, 12))]
        if name == "tokencut"
        else maskcut_masks(planted.tokens, (12, 12))
    )
    assert len(tree) == len(expected) >= 1
    for m, e in zip(tree.masks, expected):
        assert np.array_equal(m, e)
    ys, xs = np.nonzero(tree.masks[0])
    assert tree.boxes[0].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert (tree.depth == 1).all() and (tree.parent == -1).all()
    assert cutter.config()["cutter"] == name
    bad = OmegaConf.merge(node, {"alpha": 1.5})
    with pytest.raises(Exception, match="needs -1 <= alpha"):  # hydra wraps the ValueError
        instantiate(bad)
