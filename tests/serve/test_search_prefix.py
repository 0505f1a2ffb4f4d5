"""claid serve searches a prefix of the k regions first; its images equal the full k search's."""

import numpy as np
import pytest

from claid.index import first_appearances
from claid.serve.engine import PREFIX_K, SearchEngine


class PrefixIndex:
    """A compressed index stand-in: one fixed ranking, its first k returned (padded)."""

    is_exact = False

    def __init__(self, sims, ids):
        self.sims, self.ids, self.calls = sims, ids, []

    def search(self, query, k):
        self.calls.append(k)
        sims = np.full((1, k), -np.inf, np.float32)
        ids = np.full((1, k), -1, np.int64)
        n = min(k, self.sims.size)
        sims[0, :n], ids[0, :n] = self.sims[:n], self.ids[:n]
        return sims, ids


def _engine(region_image, sims, ids):
    engine = SearchEngine.__new__(SearchEngine)
    engine.index = PrefixIndex(sims, ids)
    engine.region_image = region_image
    engine.region_boxes = np.zeros((region_image.size, 4), np.float32)
    engine.image_ids = [f"i{n}" for n in range(region_image.max() + 1)]
    return engine


@pytest.mark.parametrize("case", ["many images", "few images", "short list", "negatives"])
def test_prefix_search_ranks_the_images_the_full_search_ranks(case):
    rng = np.random.default_rng(0)
    n, k, top = 3000, 1000, 10
    images = {"many images": 400, "few images": 12, "short list": 400, "negatives": 400}[case]
    region_image = np.sort(rng.integers(0, images, n))
    if case == "few images":  # the best 150 regions come from 3 images only
        region_image[:150] = np.arange(150) % 3
    found = n if case != "short list" else 60
    ids = np.arange(found, dtype=np.int64)
    sims = np.linspace(1.0, 0.01, found).astype(np.float32)
    if case == "negatives":
        sims[40:] = -np.abs(sims[40:])
    engine = _engine(region_image, sims, ids)
    results = engine.rank(np.ones(4, np.float32), top=top, k=k)
    full = first_appearances(*[a[0] for a in PrefixIndex(sims, ids).search(None, k)], region_image, top)
    assert [r["region_id"] for r in results] == full[0].tolist()
    np.testing.assert_allclose([r["score"] for r in results], full[1])
    expected_calls = {"many images": [PREFIX_K], "few images": [PREFIX_K, k],
                      "short list": [PREFIX_K], "negatives": [PREFIX_K]}[case]
    assert engine.index.calls == expected_calls
