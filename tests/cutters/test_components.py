import numpy as np

from claid.cutters.connected_parts import get_objects


def _grid_indices(mask):
    return np.flatnonzero(mask.ravel()).astype(np.int64)


def test_diagonal_neighbours_are_connected():
    mask = np.zeros((5, 5), dtype=bool)
    mask[[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]] = True  # a diagonal line: one 8-connected piece
    pieces, largest = get_objects(_grid_indices(mask), (5, 5), 1)
    assert len(pieces) == 1 and largest == 5
    np.testing.assert_array_equal(pieces[0], [0, 6, 12, 18, 24])


def test_small_components_dropped_and_raster_order():
    mask = np.zeros((6, 8), dtype=bool)
    mask[0:2, 5:8] = True  # 6 patches, first patch at index 5
    mask[3:6, 0:3] = True  # 9 patches, first patch at index 24
    mask[4, 6] = True  # 1 patch
    pieces, largest = get_objects(_grid_indices(mask), (6, 8), 6)
    assert [p.size for p in pieces] == [6, 9]
    assert largest == 9
    for piece in pieces:
        assert np.all(np.diff(piece) > 0)
    pieces, largest = get_objects(_grid_indices(mask), (6, 8), 10)
    assert pieces == [] and largest == 9


def test_empty_set():
    pieces, largest = get_objects(np.zeros(0, dtype=np.int64), (3, 3), 1)
    assert pieces == [] and largest == 0


def test_components_partition_the_set():
    rng = np.random.default_rng(0)
    mask = rng.random((12, 15)) < 0.45
    members = _grid_indices(mask)
    pieces, _ = get_objects(members, (12, 15), 1)
    joined = np.sort(np.concatenate(pieces))
    np.testing.assert_array_equal(joined, members)
