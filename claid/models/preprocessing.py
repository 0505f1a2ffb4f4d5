"""Image -> network input: resize policy, crop to the patch grid, normalise, pad.

Pure functions on sizes and images, shared by the detector backbones and the
region descriptors. The reference detector (wlzhao22/CLAID ``detector.py``)
resizes with ``torchvision.transforms.Resize(360, max_size=800)`` only when
``min(w, h) > 355``, keeps smaller images at native size, and crops the tensor
from the top-left corner to a multiple of the patch size. ``reference_size``
reproduces those sizes exactly (same integer truncation).

Sizes and scales are computed from the file's size (``claid.images.original_size``):
an image that ``load_image`` decoded smaller than the file (``long_side_needed``)
gets the same input size and scale as the full decode, from one resize.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from claid.images import original_size


def reference_size(
    height: int,
    width: int,
    *,
    short_side: int | None,
    max_long_side: int | None,
    native_below: int,
) -> tuple[int, int]:
    """Size an image is resized to before cropping to the patch grid.

    Images whose short side is below ``native_below`` pixels keep their size.
    Otherwise the short side becomes ``short_side`` and the long side follows
    the aspect ratio; when that long side exceeds ``max_long_side`` the long side
    becomes ``max_long_side`` and the short side shrinks with it (so it ends
    below ``short_side``), as torchvision's ``Resize(size, max_size)`` does.

    Args:
        height, width: original size in pixels (>= 1).
        short_side: target short side in pixels; None keeps every image native.
        max_long_side: cap on the long side in pixels; None for no cap.
        native_below: images with ``min(height, width) < native_below`` stay native.
    Returns:
        (new_height, new_width) in pixels, each >= 1.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if short_side is None or min(height, width) < native_below:
        return height, width
    if short_side < 1:
        raise ValueError(f"short_side must be >= 1, got {short_side}")
    short, long = (height, width) if height <= width else (width, height)
    new_short, new_long = short_side, int(short_side * long / short)
    if max_long_side is not None and new_long > max_long_side:
        new_short, new_long = int(max_long_side * new_short / new_long), max_long_side
    new_short, new_long = max(new_short, 1), max(new_long, 1)
    return (new_short, new_long) if height <= width else (new_long, new_short)


def capped_size(height: int, width: int, *, max_long_side: int | None) -> tuple[int, int]:
    """Native size, scaled down (aspect kept) when the long side exceeds
    ``max_long_side`` pixels; None keeps every image native."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    long = max(height, width)
    if max_long_side is None or long <= max_long_side:
        return height, width
    factor = max_long_side / long
    return max(int(round(height * factor)), 1), max(int(round(width * factor)), 1)


def grid_crop_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """Largest (h, w) <= (height, width) that are multiples of ``multiple``,
    but at least one ``multiple`` each (smaller sides are padded, see ``pad_to``)."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    return (
        max(height - height % multiple, multiple),
        max(width - width % multiple, multiple),
    )


def require_image(image: object) -> None:
    """Raise ValueError unless ``image`` is a PIL image with at least one pixel."""
    if not isinstance(image, Image.Image):
        raise ValueError(f"expected a PIL.Image, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise ValueError(f"image has no pixels ({image.width}x{image.height})")


def image_to_tensor(
    image: Image.Image, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """PIL image -> (3, h, w) float32, ``(x / 255 - mean) / std`` per channel."""
    require_image(image)
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values each, got {list(mean)} and {list(std)}")
    if min(std) <= 0:
        raise ValueError(f"std must be positive, got {list(std)}")
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    pixels = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (pixels - mean_t) / std_t


def crop_or_pad_to(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(3, h, w) -> (3, height, width): crop from the top-left corner, and pad the
    bottom / right with zeros (= the mean colour after normalisation) where the
    image is smaller. Padding keeps the pixel scale unchanged."""
    pixels = pixels[:, :height, :width]
    pad_h, pad_w = height - pixels.shape[1], width - pixels.shape[2]
    if pad_h > 0 or pad_w > 0:
        pixels = torch.nn.functional.pad(pixels, (0, max(pad_w, 0), 0, max(pad_h, 0)))
    return pixels


#: PIL resampling filters a detector may resize with (MaskCut: LANCZOS)
RESAMPLING = {"bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS, "bicubic": Image.BICUBIC}
#: how an input is fitted to the patch grid: top-left crop (CLAID's reference) or
#: zero padding at the bottom / right (TokenCut's ``main_tokencut.py``)
GRID_FITS = ("crop", "pad")


def resize_image(image: Image.Image, height: int, width: int, resample: str = "bilinear") -> Image.Image:
    """PIL resize (antialiased when shrinking, as torchvision's PIL path); bilinear
    unless ``resample`` names another of ``RESAMPLING``."""
    if (image.height, image.width) == (height, width):
        return image
    return image.convert("RGB").resize((width, height), RESAMPLING[resample])


def prepare_for_grid(
    image: Image.Image,
    *,
    patch_size: int,
    short_side: int | None,
    max_long_side: int | None,
    native_below: int,
    mean: Sequence[float],
    std: Sequence[float],
    fit: str = "crop",
    square: int | None = None,
    resample: str = "bilinear",
) -> tuple[torch.Tensor, tuple[float, float]]:
    """The detector's preprocessing: reference resize policy, top-left crop to a
    multiple of ``patch_size``, normalisation. ``fit="pad"`` zero-pads up to the next
    multiple instead of cropping (TokenCut); ``square`` resizes to ``square x square``
    whatever the aspect (MaskCut's 480 x 480), with the ``resample`` filter.

    A side shorter than one patch is zero-padded at the bottom / right up to one
    patch, so every image yields at least a 1x1 grid; the padded patch maps to
    pixels past the image border, which ``PatchGrid.patch_boxes_to_pixels`` clips.

    Returns:
        pixels: (3, h, w) float32, h and w multiples of ``patch_size``.
        scale: (sy, sx) original pixels per input pixel.
    """
    require_image(image)
    height, width = original_size(image)  # sizes follow the file, not a reduced decode
    if fit not in GRID_FITS or resample not in RESAMPLING:
        raise ValueError(f"fit must be one of {GRID_FITS} and resample one of {sorted(RESAMPLING)}, "
                         f"got {fit!r}, {resample!r}")
    if square is not None:
        new_h = new_w = int(square)
    else:
        new_h, new_w = reference_size(height, width, short_side=short_side,
                                      max_long_side=max_long_side, native_below=native_below)
    pixels = image_to_tensor(resize_image(image, new_h, new_w, resample), mean, std)
    if fit == "pad":
        fit_h, fit_w = (-(-side // patch_size) * patch_size for side in (new_h, new_w))
    else:
        fit_h, fit_w = grid_crop_size(new_h, new_w, patch_size)
    pixels = crop_or_pad_to(pixels, fit_h, fit_w)
    return pixels, (height / new_h, width / new_w)


def prepare_full_image(
    image: Image.Image,
    *,
    max_long_side: int | None,
    min_side: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> tuple[torch.Tensor, tuple[float, float]]:
    """The region descriptor's preprocessing: native resolution (as the reference
    descriptor), optionally capped at ``max_long_side``, normalised; sides below
    ``min_side`` pixels are zero-padded so the network's map has >= 1 cell.

    Returns:
        pixels: (3, h, w) float32; scale: (sy, sx) original pixels per input pixel.
    """
    require_image(image)
    height, width = original_size(image)
    new_h, new_w = capped_size(height, width, max_long_side=max_long_side)
    pixels = image_to_tensor(resize_image(image, new_h, new_w), mean, std)
    pixels = crop_or_pad_to(pixels, max(new_h, min_side), max(new_w, min_side))
    return pixels, (height / new_h, width / new_w)


def crop_box_pixels(
    box: Sequence[float] | None, height: int, width: int
) -> tuple[int, int, int, int]:
    """A float pixel box (x1, y1, x2, y2, exclusive end; None = whole image) ->
    the integer box covering it (floor start, ceil end), clipped to the image.

    Raises ValueError when the box is malformed or lies outside the image."""
    if box is None:
        return 0, 0, width, height
    values = [float(v) for v in box]
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"a box is 4 finite numbers (x1, y1, x2, y2), got {box!r}")
    x1, y1, x2, y2 = values
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"box {box!r} is empty: need x2 > x1 and y2 > y1")
    ix1, iy1 = max(int(math.floor(x1)), 0), max(int(math.floor(y1)), 0)
    ix2, iy2 = min(int(math.ceil(x2)), width), min(int(math.ceil(y2)), height)
    if ix2 <= ix1 or iy2 <= iy1:
        raise ValueError(f"box {box!r} lies outside the {width}x{height} image")
    return ix1, iy1, ix2, iy2
