import numpy as np
import pytest
import torch

from claid.cutters.affinity import gram_matrix, high_energy_mask, normalise_rows, token_matrix


def test_token_matrix_accepts_flat_grid_3d_and_torch():
    rng = np.random.default_rng(0)
    cube = rng.standard_normal((3, 4, 5))
    flat, grid = token_matrix(cube.reshape(12, 5), (3, 4))
    assert grid == (3, 4) and flat.dtype == np.float32 and flat.shape == (12, 5)
    from_cube, grid_cube = token_matrix(cube)
    np.testing.assert_array_equal(from_cube, flat)
    assert grid_cube == (3, 4)
    from_torch, _ = token_matrix(torch.from_numpy(cube).double(), (3, 4))
    np.testing.assert_array_equal(from_torch, flat)
    # row-major: row y, column x is y * W + x
    np.testing.assert_allclose(flat[1 * 4 + 2], cube[1, 2], rtol=1e-6)


@pytest.mark.parametrize(
    "tokens, grid, message",
    [
        (np.zeros((12, 5)), (3, 5), "holds 15 patches"),
        (np.zeros((12, 5)), None, "pass grid"),
        (np.zeros((3, 4, 5)), (4, 3), "does not match"),
        (np.zeros((12,)), (3, 4), "must be"),
        (np.zeros((0, 5)), (0, 0), r"grid \(0, 0\) is empty"),
        (np.zeros((0, 5)), (0, 30), r"grid \(0, 30\) is empty"),
        (np.zeros((0, 5, 5)), None, "tokens are empty"),
        (np.zeros((12, 0)), (3, 4), "empty"),
    ],
)
def test_token_matrix_rejects_bad_shapes(tokens, grid, message):
    with pytest.raises(ValueError, match=message):
        token_matrix(tokens, grid)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_token_matrix_rejects_non_finite(bad):
    tokens = np.ones((12, 5))
    tokens[7, 2] = bad
    with pytest.raises(ValueError, match="row 7"):
        token_matrix(tokens, (3, 4))


def test_normalise_rows_unit_norm_and_zero_rows():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((10, 6)).astype(np.float32) * 5
    unit = normalise_rows(x)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
    x[3] = 0
    with pytest.raises(ValueError, match="row 3"):
        normalise_rows(x)


def test_gram_is_symmetric_cosines():
    rng = np.random.default_rng(2)
    unit = normalise_rows(rng.standard_normal((50, 8)).astype(np.float32))
    gram = gram_matrix(unit)
    np.testing.assert_array_equal(gram, gram.T)  # kernels read one triangle only
    np.testing.assert_allclose(gram, unit.astype(np.float64) @ unit.T.astype(np.float64), atol=1e-6)


def test_high_energy_uses_raw_l1_norms():
    rng = np.random.default_rng(3)
    tokens = rng.standard_normal((20, 4))
    l1 = np.abs(tokens).sum(1)
    mask = high_energy_mask(tokens, 0.3)
    assert mask.sum() == 6
    assert l1[mask].min() > l1[~mask].max()
    # scaling a token up puts it in H; normalising first would not
    tokens[np.argmin(l1)] *= 100
    assert high_energy_mask(tokens, 0.3)[np.argmin(l1)]


def test_high_energy_ties_are_deterministic_and_bounds():
    mask = high_energy_mask(np.ones((10, 3)), 0.3)
    np.testing.assert_array_equal(np.flatnonzero(mask), [0, 1, 2])
    assert high_energy_mask(np.ones((10, 3)), 0.01).sum() == 1
    assert high_energy_mask(np.ones((10, 3)), 1.0).all()
    with pytest.raises(ValueError):
        high_energy_mask(np.ones((10, 3)), 0.0)
