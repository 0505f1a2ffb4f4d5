"""Exhaustive search in query blocks and database chunks equals the dense reference."""

import numpy as np
import pytest

from claid.index import rank_images_dense
from claid.index.exact_search import (
    IMAGE_ENTRY_BYTES,
    query_block_size,
    rank_images_exhaustive,
    search_all_regions,
)


def _assert_same(got, want):
    assert [r.qid for r in got] == [r.qid for r in want]
    for a, b in zip(got, want):
        assert a.images == b.images
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.boxes, b.boxes)


def _table(region_image, dim=16, seed=0, ties=False):
    """Vectors of small multiples of 1/8: every dot product is exact in float32 whatever
    the summation order, so blocked and dense similarities are bit-identical (and the
    many equal values test the tie rule)."""
    rng = np.random.default_rng(seed)
    n = len(region_image)
    database = rng.integers(-2, 3, size=(n, dim)).astype(np.float32) / 8
    if ties:  # rows repeated: equal similarities inside and across images
        database[1::3] = database[0::3][: len(database[1::3])]
    queries = rng.integers(-2, 3, size=(11, dim)).astype(np.float32) / 8
    boxes = rng.random((n, 4)).astype(np.float32)
    return database, queries, boxes


@pytest.mark.parametrize("layout", ["regular", "ragged", "whole_rows_appended", "shuffled"])
@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 10_000])
def test_blocks_and_chunks_change_nothing(layout, chunk_rows):
    rng = np.random.default_rng(3)
    n_images = 23
    if layout == "regular":
        region_image = np.repeat(np.arange(n_images), 5)
    elif layout == "ragged":  # images without regions, and one with many
        region_image = np.repeat(np.arange(n_images), rng.integers(0, 9, n_images))
    elif layout == "whole_rows_appended":  # the pipeline's search.whole_image_region
        region_image = np.concatenate([np.repeat(np.arange(n_images), 4), np.arange(n_images)])
    else:
        region_image = rng.integers(n_images, size=90)
    database, queries, boxes = _table(region_image, ties=layout != "shuffled")
    image_ids = [f"i{i}" for i in range(n_images + 2)]  # two images never seen
    qids = [f"q{i}" for i in range(len(queries))]
    exclude = [{"i3"}, set(), {"i0", "nope"}] + [set()] * (len(queries) - 3)
    want = rank_images_dense(queries @ database.T, region_image, boxes, image_ids, qids, exclude)
    # a budget of ~2 queries per block: several blocks, the last one short
    tiny = 2.5 * (len(image_ids) * IMAGE_ENTRY_BYTES + chunk_rows * 16) / 2**30
    for memory_gb in (tiny, 1.0):
        got = rank_images_exhaustive(database, queries, region_image, boxes, image_ids, qids,
                                     exclude, memory_gb=memory_gb, chunk_rows=chunk_rows)
        _assert_same(got, want)
    assert "i3" not in got[0].images and "i0" not in got[2].images


def test_query_block_follows_the_budget():
    # 27k images, 8192-row chunks: ~455 KiB per query, so 1 GiB holds ~2300 queries
    assert query_block_size(27_000, 8192, 1.0) == 2**30 // (27_000 * 12 + 8192 * 16)
    assert query_block_size(5_000_000, 8192, 0.001) == 1  # never zero
    with pytest.raises(ValueError, match="memory_gb"):
        query_block_size(10, 10, 0)


def test_search_all_regions_sorts_every_region():
    database, queries, _ = _table(np.arange(40))
    sims, ids = search_all_regions(database, queries, memory_gb=1e-6)  # one query per block
    full = queries @ database.T
    np.testing.assert_array_equal(ids, np.argsort(-full, axis=1, kind="stable"))
    np.testing.assert_array_equal(sims, np.take_along_axis(full, ids, axis=1))
