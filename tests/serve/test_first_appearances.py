"""first_appearances (claid serve's O(k) ranking of one query) equals rank_images on the whole region table."""

import numpy as np
import pytest

from claid.index import first_appearances, rank_images


@pytest.mark.parametrize("seed", range(6))
def test_first_appearances_equal_rank_images(seed):
    rng = np.random.default_rng(seed)
    n_regions, n_images, k = 500, 40, 120
    region_image = rng.integers(0, n_images, n_regions).astype(np.int64)
    boxes = rng.uniform(0, 100, (n_regions, 4)).astype(np.float32)
    image_ids = [f"img/{i:03d}.jpg" for i in range(n_images)]
    ids = rng.choice(n_regions, k, replace=False).astype(np.int64)
    sims = np.sort(rng.uniform(-0.3, 1.0, k).astype(np.float32))[::-1].copy()
    sims[10:14] = sims[10]  # ties keep their search order
    ids[-7:] = -1  # fewer than k found
    (ranking,) = rank_images(sims[None], ids[None], region_image, boxes, image_ids, ["q"])
    for top in (1, 5, 1000):
        regions, scores = first_appearances(sims, ids, region_image, top)
        assert [image_ids[region_image[r]] for r in regions] == ranking.images[:top]
        np.testing.assert_array_equal(scores.astype(np.float32), ranking.scores[:top])
        np.testing.assert_array_equal(boxes[regions], ranking.boxes[:top])
    assert (scores > 0).all() and len(set(region_image[regions])) == len(regions)


def test_the_malloc_controls_reach_glibc_where_there_is_one():
    """cap_malloc_arenas / trim_malloc are live on glibc (bench_serve's flat memory relies on
    them) and no-ops elsewhere."""
    import platform

    from claid.serve import engine

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc: the controls are no-ops")
    libc = engine._glibc()
    assert libc is not None and libc is engine._glibc()  # loaded once
    engine.cap_malloc_arenas()
    blocks = [bytearray(1 << 20) for _ in range(64)]
    del blocks
    engine.trim_malloc()
