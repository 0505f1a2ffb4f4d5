"""The detector's resize / crop / normalise policy against torchvision's reference path."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from claid.models.preprocessing import (
    capped_size,
    crop_box_pixels,
    grid_crop_size,
    prepare_for_grid,
    prepare_full_image,
    reference_size,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
POLICY = dict(short_side=360, max_long_side=800, native_below=356)


def random_image(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "height,width",
    [(480, 640), (640, 480), (356, 2000), (2000, 356), (600, 600), (400, 1200), (1080, 1920)],
)
def test_reference_size_matches_torchvision_resize(height, width):
    # the reference detector: Resize(360, max_size=800) when min(w, h) > 355
    expected = T.Resize(360, max_size=800)(Image.new("RGB", (width, height))).size[::-1]
    assert reference_size(height, width, **POLICY) == expected


@pytest.mark.parametrize("height,width", [(355, 1000), (1000, 355), (40, 56), (5, 5)])
def test_small_images_stay_native(height, width):
    assert reference_size(height, width, **POLICY) == (height, width)


def test_no_short_side_means_native():
    assert reference_size(2000, 3000, short_side=None, max_long_side=800, native_below=0) == (
        2000,
        3000,
    )


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="positive"):
        reference_size(0, 10, **POLICY)
    with pytest.raises(ValueError, match="multiple"):
        grid_crop_size(10, 10, 0)


def test_pixels_equal_the_reference_pipeline():
    image = random_image(400, 530)
    pixels, scale = prepare_for_grid(image, patch_size=8, mean=MEAN, std=STD, **POLICY)
    reference = T.Compose([T.Resize(360, max_size=800), T.ToTensor(), T.Normalize(MEAN, STD)])(
        image
    )
    h, w = reference.shape[1] - reference.shape[1] % 8, reference.shape[2] - reference.shape[2] % 8
    assert pixels.shape == (3, h, w)
    torch.testing.assert_close(pixels, reference[:, :h, :w], atol=1e-5, rtol=0)
    # scale is original pixels per resized pixel; the top-left crop does not change it
    assert scale == pytest.approx((400 / reference.shape[1], 530 / reference.shape[2]))


def test_images_below_one_patch_are_padded_to_one_patch():
    image = random_image(5, 40)
    pixels, scale = prepare_for_grid(image, patch_size=16, mean=MEAN, std=STD, **POLICY)
    assert pixels.shape == (3, 16, 32)
    assert scale == (1.0, 1.0)
    # the pad is zeros (the mean colour after normalisation), below the image only
    assert torch.all(pixels[:, 5:, :] == 0)
    assert torch.any(pixels[:, :5, :] != 0)


def test_full_image_preprocessing_caps_and_pads():
    assert capped_size(1000, 500, max_long_side=800) == (800, 400)
    assert capped_size(100, 50, max_long_side=None) == (100, 50)
    pixels, scale = prepare_full_image(
        random_image(1000, 500), max_long_side=800, min_side=32, mean=MEAN, std=STD
    )
    assert pixels.shape == (3, 800, 400)
    assert scale == pytest.approx((1.25, 1.25))
    pixels, scale = prepare_full_image(
        random_image(10, 50), max_long_side=None, min_side=32, mean=MEAN, std=STD
    )
    assert pixels.shape == (3, 32, 50) and scale == (1.0, 1.0)


def test_crop_box_pixels_covers_and_clips():
    assert crop_box_pixels((1.5, 2.2, 10.1, 20.0), 30, 40) == (1, 2, 11, 20)
    assert crop_box_pixels((-5, -5, 100, 100), 30, 40) == (0, 0, 40, 30)
    assert crop_box_pixels(None, 30, 40) == (0, 0, 40, 30)
    with pytest.raises(ValueError, match="empty"):
        crop_box_pixels((5, 5, 5, 10), 30, 40)
    with pytest.raises(ValueError, match="outside"):
        crop_box_pixels((50, 0, 60, 10), 30, 40)
    with pytest.raises(ValueError, match="4 finite"):
        crop_box_pixels((0, 0, float("nan"), 10), 30, 40)


def test_non_images_are_rejected():
    with pytest.raises(ValueError, match="PIL"):
        prepare_for_grid(np.zeros((8, 8, 3)), patch_size=8, mean=MEAN, std=STD, **POLICY)
