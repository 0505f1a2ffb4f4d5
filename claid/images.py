"""Decoding image files into RGB ``PIL.Image`` objects, with a reason for every failure.

Every stage that reads pixels goes through :func:`load_image`, so all of claid sees
the same pixels for a file: EXIF orientation applied, any mode (gray, palette,
CMYK, RGBA, 16-bit) converted to 8-bit RGB. A file that cannot be decoded raises
:class:`ImageError` whose ``reason`` is short and stable enough to be recorded in
an artifact ("empty file", "not an image", "truncated or corrupt: ...").

**Decoding at the size used.** A 12-megapixel photo decoded in full costs ~36 MB as
RGB and far more once a network sees it at that size, while the detector only
uses ~480x360 of it. :func:`load_image` takes ``long_side_needed``, a function of the
displayed (height, width) giving the longest side any consumer resizes the image
to; the file is then decoded at the smallest size not below it: JPEG through
libjpeg's DCT scaling (Pillow ``draft``: 1/2, 1/4, 1/8), other formats decoded
once and shrunk by an integer box filter (``Image.reduce``). The consumer still
does its one resize from there. The file's displayed size is kept in
``image.info["original_size"]`` (read it with :func:`original_size`), so boxes,
scales and cached sizes stay in the original pixels.

**Decoding as the authors' code does.** Two of those choices differ from the
reference code (wlzhao22/CLAID opens files with plain ``PIL.Image.open`` and
``convert("RGB")``): :class:`DecodeOptions` (``images:`` in ``conf/config.yaml``)
turns each off. ``exif_transpose: false`` keeps the file's stored orientation (boxes
are then in that orientation too); ``reduced: false`` always decodes in full, so
the one resize starts from the full pixels, as ``torchvision``'s does there.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from claid.datasets.files import DatasetFormatError
from claid.datasets.tar_shards import read_member

__all__ = ["DecodeOptions", "ImageError", "decode_entry", "decode_key", "load_image", "original_size",
           "displayed_size", "image_size_from_header"]

#: Bump when the pixels load_image returns for a file change (artifact keys include it).
DECODE_VERSION = 2  # 2: large photos decoded at the size they are used at

# EXIF orientation tag; values 5-8 rotate by 90 degrees (width and height swap).
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}

# Modes whose samples do not fit in 8 bits; PIL's own convert("L") clips them at 255.
_WIDE_GRAY_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


@dataclass(frozen=True)
class DecodeOptions:
    """How files become pixels (``images:`` in ``conf/config.yaml``).

    Attributes:
        exif_transpose: apply the EXIF orientation (claid's default); False reads
            the stored orientation, as the reference code's plain ``Image.open`` does.
        reduced: decode large photos at the size they are used at (module
            docstring); False decodes every file in full, as the reference code does.
    """

    exif_transpose: bool = True
    reduced: bool = True

    @classmethod
    def from_config(cls, node: Mapping | None) -> DecodeOptions:
        """From the ``images`` config node (None: the defaults); ValueError on an
        unknown key or a value that is not true / false."""
        values = dict(node or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"images: unknown key(s) {unknown}; allowed: {sorted(known)}")
        for name, value in values.items():
            if not isinstance(value, bool):
                raise ValueError(f"images.{name} must be true or false, got {value!r}")
        return cls(**values)


DEFAULT_DECODE = DecodeOptions()


def decode_key(options: DecodeOptions = DEFAULT_DECODE) -> int | dict:
    """What artifact keys record of how images were decoded: ``DECODE_VERSION`` for
    the defaults (so keys written before the options existed stay valid), else the
    version and the options."""
    if options == DEFAULT_DECODE:
        return DECODE_VERSION
    return {"version": DECODE_VERSION, "exif_transpose": options.exif_transpose,
            "reduced": options.reduced}


def decode_entry(options: DecodeOptions = DEFAULT_DECODE) -> dict:
    """``{"decode": decode_key(options)}`` for a cache key that did not record the
    decoding before the options existed, and nothing for the defaults (those keys
    stay valid)."""
    return {} if options == DEFAULT_DECODE else {"decode": decode_key(options)}


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


def original_size(image: Image.Image) -> tuple[int, int]:
    """(height, width) of the file ``image`` was decoded from, as displayed: its own
    size unless :func:`load_image` decoded it smaller."""
    size = image.info.get("original_size")
    return (int(size[0]), int(size[1])) if size else (image.height, image.width)


def _reduce_on_decode(opened: Image.Image, needed: int | None, displayed_long: int) -> int:
    """Ask a JPEG to decode at >= ``needed`` px on its long side (DCT scaling); returns
    the integer factor to shrink other formats by after decoding (1: none)."""
    if needed is None or needed < 1 or needed * 2 > displayed_long:
        return 1
    factor = needed / displayed_long
    if opened.format == "JPEG":
        width, height = opened.size  # stored orientation: the same factor on both sides
        opened.draft(None, (max(1, math.ceil(width * factor)), max(1, math.ceil(height * factor))))
        return 1
    return displayed_long // needed


def _source(path: str) -> str | io.BytesIO:
    """``path``, or the bytes of the tar-shard member it names when it runs through
    a shard file (``<dir>/x.tar/<key>``, see claid/datasets/tar_shards.py)."""
    if os.path.exists(path):
        return path
    try:
        data = read_member(path)
    except (DatasetFormatError, OSError) as err:
        raise ImageError(f"cannot read tar shard member: {err}", path) from err
    return path if data is None else io.BytesIO(data)


def load_image(
    path: str | os.PathLike,
    *,
    long_side_needed: Callable[[int, int], int | None] | None = None,
    options: DecodeOptions = DEFAULT_DECODE,
) -> Image.Image:
    """Decode one image file into memory, in full or at the size it is used at.

    Args:
        path: file path, or ``<shard>.tar/<key>``: an image inside a tar shard.
        long_side_needed: (height, width) as displayed -> the longest side in pixels
            any consumer resizes this image to, or None for full size. The image is
            then decoded with its long side >= that (never upscaled), see the module
            docstring; ``original_size(image)`` gives the file's size. Ignored with
            ``options.reduced`` False.
        options: :class:`DecodeOptions` (EXIF orientation, reduced decoding).
    Returns:
        An 8-bit "RGB" image, (width, height) as displayed: EXIF orientation applied
        (unless ``options.exif_transpose`` is False).
    Raises:
        ImageError: missing, empty, not an image, truncated or corrupt file.
    """
    path = os.fspath(path)
    source = _source(path)
    try:
        size = os.path.getsize(source) if isinstance(source, str) else len(source.getbuffer())
    except OSError as err:
        raise ImageError(f"cannot read file: {err.strerror or err}", path) from err
    if size == 0:
        raise ImageError("empty file", path)
    try:
        with warnings.catch_warnings():
            # A PIL warning (e.g. a huge image, a corrupt EXIF block) is not a
            # failure; the decode below is the test.
            warnings.simplefilter("ignore")
            with Image.open(source) as opened:
                full = _displayed(opened) if options.exif_transpose else opened.size[::-1]
                shrink = 1
                if long_side_needed is not None and options.reduced:
                    shrink = _reduce_on_decode(opened, long_side_needed(*full), max(full))
                opened.load()
                image = ImageOps.exif_transpose(opened) if options.exif_transpose else opened
                if image is opened:
                    image = opened.copy()
                if shrink > 1:
                    image = image.reduce(shrink)
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
    image = _to_rgb(image)
    if (image.height, image.width) != full:
        image.info["original_size"] = full
    return image


def _displayed(opened: Image.Image) -> tuple[int, int]:
    """(height, width) of an opened file as displayed (EXIF orientation applied)."""
    width, height = opened.size
    orientation = opened.getexif().get(_EXIF_ORIENTATION, 1)
    if orientation in _TRANSPOSED_ORIENTATIONS and opened.format != "TIFF":
        width, height = height, width  # Pillow's TIFF reader already reports the rotated size
    return int(height), int(width)


def displayed_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image as :func:`load_image` returns it (EXIF
    orientation applied), read from the file header without decoding pixels.

    Raises:
        ImageError: missing, empty, or unreadable header.
    """
    path = os.fspath(path)
    source = _source(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(source) as opened:
                height, width = _displayed(opened)
    except FileNotFoundError as err:
        raise ImageError(f"cannot read file: {err.strerror or err}", path) from err
    except UnidentifiedImageError as err:
        size = os.path.getsize(source) if isinstance(source, str) else len(source.getbuffer())
        reason = "empty file" if size == 0 else "not an image (unrecognised format)"
        raise ImageError(reason, path) from err
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        raise ImageError(f"truncated or corrupt: {err}", path) from err
    return height, width


def image_size_from_header(path: str | os.PathLike) -> tuple[int, int] | None:
    """:func:`displayed_size`, or None when the header cannot be read: a cheap key
    for grouping images of similar shape into batches (decoding reports failures)."""
    try:
        return displayed_size(path)
    except ImageError:
        return None
