"""Training an index holds the training sample once: the float32 sample (converted
from the store's float16 rows) is normalised in place and whitened block by block,
so a 100k x 2048 sample costs 0.8 GiB, not three or four times that (issue 11).
Measured with tracemalloc, which sees numpy's buffers."""

import tracemalloc

import numpy as np
import pytest

from claid.index import RegionIndex, build_index
from claid.index.search_table import region_table
from claid.index.whitening import fit_pca_whitening, l2_normalize, whiten_and_normalize
from claid.store.generated import write_synthetic_store

N, D = 30000, 256
F32 = N * D * 4


def _peak(fn):
    tracemalloc.start()
    try:
        value = fn()
        return value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    store = write_synthetic_store(str(tmp_path_factory.mktemp("store") / "s"), n_images=N // 20,
                                  regions_per_image=20, dim=D, shard_size=500)
    return region_table(store, None)


def test_a_whitened_ivf_index_trains_on_about_one_float32_copy_of_its_sample(table, monkeypatch):
    # blocks small beside the sample, as 4096 rows are beside a 100k-row sample
    for name in ("NORM_BLOCK", "TRANSFORM_BLOCK", "COVARIANCE_BLOCK"):
        monkeypatch.setattr(f"claid.index.whitening.{name}", 512)
    assert table.stored_dtype == np.float16
    settings = dict(factory="IVF16,Flat", whitening="database", whitening_dim=32, seed=0)
    index, peak = _peak(lambda: build_index(table, **settings))
    assert index.ntotal == N
    # the float16 sample (0.5) + its float32 unit copy (1.0) + the 32-D training
    # points and the indexed vectors (0.125 each) + blocks; before this: a float32
    # sample, its unit copy, that copy again and a centred copy (4.0)
    assert peak < 2.0 * F32, f"peak {peak / F32:.2f} x the float32 sample"
    reference = RegionIndex.build(table.vectors(), **settings)
    queries = table.gather(np.arange(0, N, 50))
    np.testing.assert_array_equal(index.search(queries, 5)[1], reference.search(queries, 5)[1])


def test_normalising_never_writes_into_the_callers_array():
    rng = np.random.default_rng(0)
    x32 = rng.normal(size=(50, 8)).astype(np.float32)
    kept = x32.copy()
    unit = l2_normalize(x32)
    np.testing.assert_array_equal(x32, kept)  # float32 input without overwrite: a copy
    x16 = x32.astype(np.float16)
    kept16 = x16.copy()
    unit16 = l2_normalize(x16)
    np.testing.assert_array_equal(x16, kept16)  # the float32 conversion is normalised
    np.testing.assert_allclose(np.linalg.norm(unit16, axis=1), 1, rtol=1e-6)
    given = x32.copy()
    assert l2_normalize(given, overwrite=True) is given  # given away: in place
    np.testing.assert_array_equal(given, unit)
    read_only = np.lib.stride_tricks.as_strided(x32)  # a view: never overwritten
    read_only.flags.writeable = False
    np.testing.assert_array_equal(l2_normalize(read_only, overwrite=True), unit)


def test_blockwise_whitening_equals_the_whole_array_and_names_global_rows():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1000, 16)).astype(np.float32)
    white = fit_pca_whitening(l2_normalize(x), dim=8)
    whole = whiten_and_normalize(x, white, block=5000)
    blocked = whiten_and_normalize(x, white, block=64)
    np.testing.assert_allclose(blocked, whole, rtol=1e-6, atol=1e-6)
    x[700] = 0
    with pytest.raises(ValueError, match=r"first: \[700\]"):
        whiten_and_normalize(x, white, block=64)
