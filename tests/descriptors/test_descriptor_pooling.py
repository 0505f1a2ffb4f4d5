"""Pure pooling functions: box/mask -> cells, GeM/max/mean, normalisation."""

import numpy as np
import pytest
import torch

from claid.descriptors.pooling import (
    boxes_to_cells,
    gem,
    l2_normalise,
    masks_to_cells,
    pool_cells,
)


def test_box_cells_follow_the_reference_floor_ceil():
    cells = boxes_to_cells(np.array([[33, 0, 65, 31]]), (1.0, 1.0), 32, (4, 4))
    assert cells.tolist() == [[1, 0, 3, 1]]


def test_box_cells_are_the_cells_the_box_touches():
    rng = np.random.default_rng(0)
    h, w, stride, (sy, sx) = 6, 9, 16, (1.5, 0.75)
    for _ in range(200):
        x1, x2 = np.sort(rng.uniform(0, w * stride * sx, 2))
        y1, y2 = np.sort(rng.uniform(0, h * stride * sy, 2))
        if x2 - x1 < 1e-3 or y2 - y1 < 1e-3:
            continue
        ((cx1, cy1, cx2, cy2),) = boxes_to_cells(
            np.array([[x1, y1, x2, y2]]), (sy, sx), stride, (h, w)
        )
        cols = [j for j in range(w) if j * stride * sx < x2 and (j + 1) * stride * sx > x1]
        rows = [i for i in range(h) if i * stride * sy < y2 and (i + 1) * stride * sy > y1]
        assert (cx1, cx2) == (cols[0], cols[-1] + 1)
        assert (cy1, cy2) == (rows[0], rows[-1] + 1)


@pytest.mark.parametrize(
    "box",
    [[500, 500, 600, 600], [-50, -50, -10, -10], [10, 10, 10, 10], [0, 0, 1, 1]],
    ids=["past-the-map", "before-the-map", "degenerate", "sub-cell"],
)
def test_every_box_gets_at_least_one_cell_inside_the_map(box):
    ((x1, y1, x2, y2),) = boxes_to_cells(np.array([box]), (1.0, 1.0), 32, (3, 5))
    assert 0 <= x1 < x2 <= 5 and 0 <= y1 < y2 <= 3


def test_non_finite_boxes_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        boxes_to_cells(np.array([[0, 0, np.nan, 5]]), (1.0, 1.0), 32, (3, 5))


def test_masks_on_the_same_grid_map_to_themselves():
    rng = np.random.default_rng(1)
    masks = rng.random((3, 5, 7)) > 0.5
    cells = masks_to_cells(masks, (8.0, 8.0), (1.0, 1.0), 8, (5, 7))
    np.testing.assert_array_equal(cells, masks)


def test_masks_are_sampled_at_cell_centres():
    # detector patches of 8 px, descriptor cells of 16 px: cell i samples patch 2i+1
    rng = np.random.default_rng(2)
    masks = rng.random((2, 8, 10)) > 0.5
    cells = masks_to_cells(masks, (8.0, 8.0), (1.0, 1.0), 16, (4, 5))
    np.testing.assert_array_equal(cells, masks[:, 1::2, 1::2])
    # cells past the mask grid (the detector cropped the border) are out
    wider = masks_to_cells(masks, (8.0, 8.0), (1.0, 1.0), 16, (5, 6))
    assert not wider[:, 4, :].any() and not wider[:, :, 5].any()


def test_pool_cells_matches_a_direct_computation():
    rng = np.random.default_rng(3)
    fmap = torch.from_numpy(rng.random((4, 5, 6)).astype(np.float32))
    cells = np.array([[1, 0, 4, 3], [0, 2, 6, 5]])
    for method in ("mean", "max", "gem"):
        out = pool_cells(fmap, cells, method, p=3.0).numpy()
        for r, (x1, y1, x2, y2) in enumerate(cells):
            region = fmap[:, y1:y2, x1:x2].reshape(4, -1).numpy().astype(np.float64)
            expected = {
                "mean": region.mean(1),
                "max": region.max(1),
                "gem": np.mean(np.maximum(region, 1e-6) ** 3, 1) ** (1 / 3),
            }[method]
            np.testing.assert_allclose(out[r], expected, rtol=1e-5)


def test_gem_interpolates_between_mean_and_max():
    values = torch.tensor([[0.1, 0.5, 2.0, 3.0]])
    assert gem(values, 1.0).item() == pytest.approx(values.mean().item())
    assert gem(values, 3.0).item() > values.mean().item()
    assert gem(values, 200.0).item() == pytest.approx(3.0, rel=0.01)
    with pytest.raises(ValueError, match="positive"):
        gem(values, 0.0)


def test_mask_restricts_pooling_and_empty_masks_fall_back_to_the_box():
    fmap = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    cells = np.array([[0, 0, 4, 3], [0, 0, 2, 2]])
    masks = np.zeros((2, 3, 4), dtype=bool)
    masks[0, 2, 3] = True  # one cell only
    masks[1, 2, 3] = True  # outside its box: falls back to the box
    out = pool_cells(fmap, cells, "mean", cell_masks=masks)
    torch.testing.assert_close(out[0], fmap[:, 2, 3])
    torch.testing.assert_close(out[1], fmap[:, :2, :2].reshape(2, -1).mean(1))


def test_bad_pooling_inputs_are_rejected():
    fmap = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="pooling"):
        pool_cells(fmap, np.array([[0, 0, 1, 1]]), "median")
    with pytest.raises(ValueError, match="cell_masks"):
        pool_cells(fmap, np.array([[0, 0, 1, 1]]), "mean", cell_masks=np.zeros((1, 2, 2), bool))


def test_l2_normalise_gives_unit_rows():
    rows = l2_normalise(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    assert rows.dtype == np.float32
    np.testing.assert_allclose(rows, [[0.6, 0.8], [0.0, 0.0]])


def _pool_one_region_at_a_time(fmap, cells, method, p, cell_masks):
    """The per-region reference the batched pooling replaced (kept here as the oracle)."""
    from claid.descriptors.pooling import gem

    c = fmap.shape[0]
    rows = []
    for r, (x1, y1, x2, y2) in enumerate(cells.tolist()):
        region = fmap[:, y1:y2, x1:x2].reshape(c, -1)
        if cell_masks is not None:
            keep = torch.from_numpy(cell_masks[r, y1:y2, x1:x2].copy()).reshape(-1)
            if keep.any():
                region = region[:, keep]
        rows.append({"mean": lambda v: v.mean(1), "max": lambda v: v.amax(1),
                     "gem": lambda v: gem(v, p)}[method](region))
    return torch.stack(rows) if rows else torch.zeros(0, c)


@pytest.mark.parametrize("block_elements", [1, 1 << 24], ids=["one-region-blocks", "one-block"])
@pytest.mark.parametrize("method", ["mean", "max", "gem"])
def test_batched_pooling_equals_pooling_each_region_alone(method, block_elements, monkeypatch):
    """Random maps (negative values too), boxes past the edges, masks inside, across
    and outside their boxes: the batched reduction gives each region's own value."""
    import claid.descriptors.pooling as pooling

    monkeypatch.setattr(pooling, "_BLOCK_ELEMENTS", block_elements)
    rng = np.random.default_rng(4)
    for trial in range(12):
        c, h, w = (int(v) for v in rng.integers(1, 40, 1).tolist() + rng.integers(1, 11, 2).tolist())
        fmap = torch.from_numpy(rng.standard_normal((c, h, w)).astype(np.float32))
        count = int(rng.integers(0, 8))
        corners = np.sort(rng.uniform(-10, 100, (count, 2, 2)), axis=1)
        boxes = corners.transpose(0, 2, 1).reshape(count, 4)[:, [0, 2, 1, 3]]
        cells = boxes_to_cells(boxes, (1.0, 1.0), 8, (h, w))
        masks = rng.random((count, h, w)) > 0.6 if trial % 2 else None
        got = pool_cells(fmap, cells, method, 3.0, masks)
        expected = _pool_one_region_at_a_time(fmap, cells, method, 3.0, masks)
        assert got.shape == (count, c)
        torch.testing.assert_close(got, expected, rtol=2e-6, atol=1e-7)
