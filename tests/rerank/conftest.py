import numpy as np
import pytest

from claid.index import build_index
from claid.index.search_table import RegionTable
from claid.rerank.common import RowSource


def make_rows(x, region_image, factory="Flat", whitening="none", **kw):
    """(index, RowSource over a table of extra rows only, table) for vectors ``x``."""
    region_image = np.asarray(region_image, np.int64)
    n_images = int(region_image.max()) + 1
    boxes = np.tile(np.arange(4, dtype=np.float32), (len(x), 1)) + np.arange(len(x))[:, None]
    table = RegionTable(None, x.astype(np.float32), region_image, boxes.astype(np.float32),
                        [f"img{i}" for i in range(n_images)], x.shape[1])
    index = build_index(table, factory=factory, whitening=whitening, **kw)
    return index, RowSource.of_table(index, table), table


@pytest.fixture
def seeded():
    return np.random.default_rng(0)
