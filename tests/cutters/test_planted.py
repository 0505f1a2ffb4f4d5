import numpy as np
import pytest
from scipy import ndimage

from claid.cutters.affinity import high_energy_mask
from claid.cutters.planted import best_iou, planted_token_map


def test_deterministic_from_seed():
    a = planted_token_map((22, 30), 48, seed=4)
    b = planted_token_map((22, 30), 48, seed=4)
    c = planted_token_map((22, 30), 48, seed=5)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.object_masks, b.object_masks)
    assert not np.array_equal(a.tokens, c.tokens)


@pytest.mark.parametrize("grid, dim", [((22, 30), 384), ((45, 60), 64)])
def test_shapes_and_ground_truth(grid, dim):
    planted = planted_token_map(grid, dim, seed=0, n_objects=4, n_repeated=2, parts_per_object=3)
    h, w = grid
    assert planted.tokens.shape == (h * w, dim) and planted.tokens.dtype == np.float32
    assert planted.object_masks.shape == (4, h, w)
    assert planted.part_masks.shape == (12, h, w)
    # objects are disjoint, 8-connected, and not touching one another
    assert planted.object_masks.sum(0).max() == 1
    for mask in planted.object_masks:
        assert ndimage.label(mask, structure=np.ones((3, 3)))[1] == 1
    union = planted.object_masks.any(0)
    assert ndimage.label(union, structure=np.ones((3, 3)))[1] == 4
    # parts partition their objects
    for k, mask in enumerate(planted.object_masks):
        parts = planted.part_masks[planted.part_object == k]
        np.testing.assert_array_equal(parts.sum(0), mask.astype(int))
    # repeated instances share a class
    assert planted.object_class[0] == planted.object_class[1]
    assert len(set(planted.object_class[1:])) == 3
    # background bands cover the grid once
    np.testing.assert_array_equal(planted.background_masks.sum(0), 1)


def test_objects_carry_more_energy_and_cohere():
    planted = planted_token_map((22, 30), 384, seed=3)
    l1 = np.abs(planted.tokens).sum(1)
    objects = planted.object_masks.any(0).ravel()
    assert np.median(l1[objects]) > 1.5 * np.median(l1[~objects])
    high = high_energy_mask(planted.tokens, 0.3)
    assert (high & objects).sum() / objects.sum() > 0.8
    unit = planted.tokens / np.linalg.norm(planted.tokens, axis=1, keepdims=True)
    first = planted.part_masks[0].ravel()
    inside = unit[first] @ unit[first].T
    across = unit[first] @ unit[~objects].T
    assert inside[np.triu_indices(first.sum(), 1)].min() > 0.2  # a part is one clique
    assert np.median(across) < 0.2


def test_best_iou():
    truth = np.zeros((2, 4, 4), dtype=bool)
    truth[0, :2] = True
    truth[1, 3, 3] = True
    pred = np.zeros((1, 4, 4), dtype=bool)
    pred[0, :1] = True
    np.testing.assert_allclose(best_iou(truth, pred), [0.5, 0.0])
    np.testing.assert_allclose(best_iou(truth, pred[:0]), [0.0, 0.0])


def test_impossible_settings_raise():
    with pytest.raises(ValueError, match="could not place"):
        planted_token_map((8, 8), 16, n_objects=12, object_size=(0.3, 0.4))
    with pytest.raises(ValueError):
        planted_token_map((22, 30), 16, n_objects=2, n_repeated=3)
