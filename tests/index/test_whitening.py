import numpy as np
import pytest

from claid.index import (
    apply_whitening,
    fit_pca_whitening,
    l2_normalize,
    load_whitening,
    save_whitening,
    whiten_and_normalize,
)

from .conftest import clustered_vectors


def test_whitened_fitting_data_has_identity_covariance():
    x = clustered_vectors(2000, 16, seed=3)
    white = fit_pca_whitening(x)
    y = apply_whitening(x, white)
    assert y.shape == (2000, 16)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(16), atol=2e-3)


def test_matches_svd_reference_up_to_sign():
    # Independent reference: PCA whitening from the SVD of the centred data, i.e.
    # sklearn's PCA(whiten=True).transform.
    x = clustered_vectors(500, 12, seed=4)
    white = fit_pca_whitening(x, dim=5, eps=0.0)
    centred = x.astype(np.float64) - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    reference = centred @ vt[:5].T / (s[:5] / np.sqrt(len(x) - 1))
    ours = apply_whitening(x, white)
    signs = np.sign(np.sum(ours * reference, axis=0))
    np.testing.assert_allclose(ours, reference * signs, atol=1e-3)
    np.testing.assert_allclose(white["eigvals"], s[:5] ** 2 / (len(x) - 1), rtol=1e-6)


def test_dimension_is_capped_by_rank():
    x = clustered_vectors(10, 32, seed=5)  # 10 vectors span at most 9 centred directions
    assert fit_pca_whitening(x)["proj"].shape == (32, 9)
    with pytest.raises(ValueError, match="variance in only 9 directions"):
        fit_pca_whitening(x, dim=20)
    with pytest.raises(ValueError, match="at least 2"):
        fit_pca_whitening(x[:1])


def test_fit_is_deterministic_and_block_independent():
    x = clustered_vectors(300, 8, seed=6)
    a = fit_pca_whitening(x, dim=4, block=7)
    b = fit_pca_whitening(x, dim=4, block=1000)
    np.testing.assert_allclose(a["proj"], b["proj"], rtol=1e-5, atol=1e-6)


def test_save_load_round_trip_and_use_on_other_data(tmp_path):
    white = fit_pca_whitening(clustered_vectors(400, 8, seed=7), dim=6, fitted_on="set A")
    path = save_whitening(tmp_path / "pca.npz", white)
    loaded = load_whitening(path)
    assert loaded["fitted_on"] == "set A" and loaded["n_fit"] == 400
    other = clustered_vectors(20, 8, seed=8)
    np.testing.assert_array_equal(
        whiten_and_normalize(other, loaded), whiten_and_normalize(other, white)
    )
    assert not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(ValueError, match="fitted on dimension 8"):
        apply_whitening(clustered_vectors(3, 9), loaded)
    with pytest.raises(FileNotFoundError, match="fit one"):
        load_whitening(tmp_path / "missing.npz")


def test_protocol_transform_is_unit_norm():
    x = clustered_vectors(200, 8, seed=9) * 3.0
    white = fit_pca_whitening(l2_normalize(x), dim=5)
    y = whiten_and_normalize(x, white)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1, rtol=1e-5)
    # Without whitening only the first L2 step applies.
    np.testing.assert_allclose(whiten_and_normalize(x, None), l2_normalize(x))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_and_zero_rows_are_errors(bad):
    x = clustered_vectors(5, 4)
    x[2, 1] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        l2_normalize(x)
    with pytest.raises(ValueError, match="all-zero"):
        l2_normalize(np.zeros((2, 4)))


def test_one_block_normalisation_equals_the_blockwise_one_bit_for_bit(monkeypatch):
    """l2_normalize's one-block path (a query's) divides by np.linalg.norm's exact norms,
    so a query normalised alone equals the same row normalised in a large batch."""
    import claid.index.whitening as whitening

    rng = np.random.default_rng(3)
    vectors = (rng.standard_normal((300, 64)) * rng.uniform(1e-3, 1e3, (300, 1))).astype(np.float32)
    one_block = whitening.l2_normalize(vectors)
    expected = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_array_equal(one_block, expected)
    monkeypatch.setattr(whitening, "NORM_BLOCK", 7)  # the blockwise path
    np.testing.assert_array_equal(whitening.l2_normalize(vectors), one_block)
    np.testing.assert_array_equal(whitening.l2_normalize(vectors[5:6]), one_block[5:6])
    copy = vectors.copy()
    assert whitening.l2_normalize(copy, overwrite=True) is copy  # in place when given away
    huge = np.full((1, 4), 3e38, np.float32)  # finite entries whose squares overflow
    np.testing.assert_array_equal(whitening.l2_normalize(huge), np.zeros((1, 4), np.float32))
