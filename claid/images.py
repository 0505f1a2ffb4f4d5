"""Decoding image files into RGB ``PIL.Image`` objects, with a reason for every failure.

Every stage that reads pixels goes through :func:`load_image`, so all of claid sees
the same pixels for a file: EXIF orientation applied, any mode (gray, palette,
CMYK, RGBA, 16-bit) converted to 8-bit RGB. A file that cannot be decoded raises
:class:`ImageError` whose ``reason`` is short and stable enough to be recorded in
an artifact ("empty file", "not an image", "truncated or corrupt: ...").
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageError", "load_image", "displayed_size", "image_size_from_header"]

# EXIF orientation tag; values 5-8 rotate by 90 degrees (width and height swap).
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}

# Modes whose samples do not fit in 8 bits; PIL's own convert("L") clips them at 255.
_WIDE_GRAY_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


class ImageError(Exception):
    """A file that is not a decodable image. ``reason`` says why, in a few words."""

    def __init__(self, reason: str, path: str | None = None) -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)


def _wide_gray_to_l(image: Image.Image) -> Image.Image:
    """16-bit (or 32-bit integer) grayscale -> 8-bit "L" by keeping the high byte.

    A 16-bit PNG uses the full 0..65535 range, so dividing by 257 maps it onto
    0..255 exactly; clipping (what ``convert("L")`` does) would turn it white.
    """
    samples = np.asarray(image, dtype=np.float64)
    if image.mode == "I" and samples.size and samples.max() <= 255 and samples.min() >= 0:
        # 32-bit container holding 8-bit data (e.g. some TIFFs): keep values as they are.
        scaled = samples
    else:
        scaled = np.clip(samples, 0, 65535) / 257.0
    return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> "RGB"; transparency is composited over white (not dropped,
    which would reveal whatever colour the transparent pixels happen to hold)."""
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_GRAY_MODES:
        return _wide_gray_to_l(image).convert("RGB")
    if image.mode == "F":
        samples = np.asarray(image, dtype=np.float64)
        lo, hi = (float(samples.min()), float(samples.max())) if samples.size else (0.0, 1.0)
        scaled = (samples - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(samples)
        return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L").convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode one image file fully into memory.

    Args:
        path: file path.
    Returns:
        An 8-bit "RGB" image, (width, height) as displayed: EXIF orientation applied.
    Raises:
        ImageError: missing, empty, not an image, truncated or corrupt file.
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
    except OSError as err:
        raise ImageError(f"cannot read file: {err.strerror or err}", path) from err
    if size == 0:
        raise ImageError("empty file", path)
    try:
        with warnings.catch_warnings():
            # A PIL warning (e.g. a huge image, a corrupt EXIF block) is not a
            # failure; the decode below is the test.
            warnings.simplefilter("ignore")
            with Image.open(path) as opened:
                opened.load()
                image = ImageOps.exif_transpose(opened)
                if image is opened:
                    image = opened.copy()
    except UnidentifiedImageError as err:
        raise ImageError("not an image (unrecognised format)", path) from err
    except Image.DecompressionBombError as err:
        raise ImageError(f"too many pixels: {err}", path) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        # PIL signals truncated data with OSError ("image file is truncated"),
        # broken headers with SyntaxError/ValueError/EOFError.
        raise ImageError(f"truncated or corrupt: {err}", path) from err
    if image.width == 0 or image.height == 0:
        raise ImageError("image has zero width or height", path)
    return _to_rgb(image)


def displayed_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image as :func:`load_image` returns it (EXIF
    orientation applied), read from the file header without decoding pixels.

    Raises:
        ImageError: missing, empty, or unreadable header.
    """
    path = os.fspath(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as opened:
                width, height = opened.size
                orientation = opened.getexif().get(_EXIF_ORIENTATION, 1)
                # Pillow's TIFF reader already reports the rotated size
                already_rotated = opened.format == "TIFF"
    except FileNotFoundError as err:
        raise ImageError(f"cannot read file: {err.strerror or err}", path) from err
    except UnidentifiedImageError as err:
        reason = "empty file" if os.path.getsize(path) == 0 else "not an image (unrecognised format)"
        raise ImageError(reason, path) from err
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        raise ImageError(f"truncated or corrupt: {err}", path) from err
    if orientation in _TRANSPOSED_ORIENTATIONS and not already_rotated:
        width, height = height, width
    return int(height), int(width)


def image_size_from_header(path: str | os.PathLike) -> tuple[int, int] | None:
    """:func:`displayed_size`, or None when the header cannot be read: a cheap key
    for grouping images of similar shape into batches (decoding reports failures)."""
    try:
        return displayed_size(path)
    except ImageError:
        return None
