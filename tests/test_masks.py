"""One patch -> pixel mask rule (claid/masks.py), used by the store, the evaluation and the pictures."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from claid.masks import patch_mask_to_pixels


def _by_definition(mask: np.ndarray, cell: tuple[str, str], image_size: tuple[int, int]) -> np.ndarray:
    """Pixel (y, x) is in patch (i, j) iff i*cy <= y < (i+1)*cy and j*cx <= x < (j+1)*cx,
    in exact rational arithmetic (cells given as decimal strings)."""
    cy, cx = Fraction(cell[0]), Fraction(cell[1])
    out = np.zeros(image_size, dtype=bool)
    for y in range(image_size[0]):
        i = int(Fraction(y) / cy)
        for x in range(image_size[1]):
            j = int(Fraction(x) / cx)
            out[y, x] = i < mask.shape[0] and j < mask.shape[1] and bool(mask[i, j])
    return out


def test_integer_cells_paint_whole_cells_and_drop_the_cropped_border():
    mask = np.zeros((2, 3), bool)
    mask[1, 2] = True
    pixels = patch_mask_to_pixels(mask, (10.0, 10.0), (23, 35))
    expected = np.zeros((23, 35), bool)
    expected[10:20, 20:30] = True  # rows 20-22 and columns 30-34 lie past the grid
    np.testing.assert_array_equal(pixels, expected)


@pytest.mark.parametrize(
    "cell, grid, image_size",
    [
        (("10.4", "10.4"), (11, 14), (120, 150)),  # P = 8 at scale 1.3 (the case of issue 9)
        (("20.8", "20.8"), (5, 7), (110, 150)),  # P = 16 at 1.3: pixels on exact cell edges
        (("6.25", "7.5"), (9, 6), (60, 47)),  # anisotropic cells
        (("4.0", "4.0"), (5, 5), (20, 20)),  # grid fills the image exactly
    ],
)
def test_fractional_cells_follow_the_stated_rule(cell, grid, image_size):
    mask = np.random.default_rng(0).random(grid) < 0.5
    pixels = patch_mask_to_pixels(mask, (float(cell[0]), float(cell[1])), image_size)
    np.testing.assert_array_equal(pixels, _by_definition(mask, cell, image_size))


def test_stacks_and_single_masks_agree():
    masks = np.random.default_rng(1).random((3, 4, 5)) < 0.5
    stacked = patch_mask_to_pixels(masks, (10.4, 10.4), (44, 50))
    assert stacked.shape == (3, 44, 50) and stacked.dtype == bool
    for r in range(3):
        np.testing.assert_array_equal(stacked[r], patch_mask_to_pixels(masks[r], (10.4, 10.4), (44, 50)))


def test_cells_cover_the_patch_area():
    # every patch gets ceil/floor of cy * cx pixels: areas agree with the geometry to a pixel row
    mask = np.ones((11, 14), bool)
    pixels = patch_mask_to_pixels(mask, (10.4, 10.4), (200, 200))
    assert pixels.sum() == int(np.ceil(11 * 10.4)) * int(np.ceil(14 * 10.4))


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.zeros(4, bool), (1.0, 1.0), (4, 4)), "masks"),
        ((np.zeros((2, 2), bool), (0.0, 1.0), (4, 4)), "cell"),
        ((np.zeros((2, 2), bool), (float("nan"), 1.0), (4, 4)), "cell"),
        ((np.zeros((2, 2), bool), (1.0, 1.0), (-1, 4)), "image_size"),
    ],
)
def test_bad_input_names_the_argument(args, message):
    with pytest.raises(ValueError, match=message):
        patch_mask_to_pixels(*args)


def test_store_evaluation_and_pictures_paint_the_same_pixels(tmp_path, monkeypatch):
    """The three users of the rule agree at scale 1.3 (where three older rules differed)."""
    from PIL import Image

    import claid.figures as figures
    from claid.evaluation.detection import patch_masks_to_pixels
    from claid.store import RegionStore, RegionStoreWriter
    from claid.structures import RegionDescriptors

    patch_size, scale, grid, image_size = 8, (1.3, 1.3), (11, 14), (150, 190)
    cell = (patch_size * scale[0], patch_size * scale[1])
    masks = np.random.default_rng(2).random((3, *grid)) < 0.4
    vectors = np.eye(3, 8, dtype=np.float32)
    item = RegionDescriptors(
        image_id="a.jpg", image_size=image_size, boxes=np.zeros((3, 4), np.float32), masks=masks,
        depth=np.ones(3, np.int64), parent=-np.ones(3, np.int64), vectors=vectors,
    )  # fmt: skip
    writer = RegionStoreWriter(tmp_path / "store", config={"cutter": {}}, dim=8)
    writer.add(item, cell=cell)
    writer.flush()
    store = RegionStore.open(tmp_path / "store")
    from_store = np.stack([store.mask_pixels(r) for r in range(3)])
    from_evaluation = patch_masks_to_pixels(masks, patch_size=patch_size, scale=scale, image_size=image_size)
    np.testing.assert_array_equal(from_store, from_evaluation)
    np.testing.assert_array_equal(from_store, patch_mask_to_pixels(masks, cell, image_size))
    assert store.cell(0) == pytest.approx(cell)

    painted = []

    def spy(mask, cell_, size):
        out = patch_mask_to_pixels(mask, cell_, size)
        painted.append(out)
        return out

    monkeypatch.setattr(figures, "patch_mask_to_pixels", spy)
    image = Image.new("RGB", (image_size[1], image_size[0]), "white")
    figures.hierarchy_figure(image, masks, np.ones(3, np.int64), tmp_path / "h.png", cell=store.cell(0))
    np.testing.assert_array_equal(np.stack(painted), from_store)
