"""The raw material of the synthetic benchmark: object instances, clutter and
textures cut from the photos scikit-image ships (``skimage.data``, no download).

An *instance* is one physical object (a cat's face, a coffee cup, a rocket...)
with an alpha matte; it is what queries look for. *Clutter* patches come from
other photos and never contain an instance; *textures* make the backgrounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Asset:
    """One cut-out.

    Attributes:
        name: stable identifier, recorded in the ground truth.
        rgb: (H, W, 3) uint8.
        alpha: (H, W) float32 in [0, 1], 1 where the cut-out is opaque.
    """

    name: str
    rgb: np.ndarray
    alpha: np.ndarray


def _as_rgb(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3].astype(np.uint8))


def ellipse_alpha(height: int, width: int, feather: float = 0.06) -> np.ndarray:
    """(height, width) float32 matte of the inscribed ellipse with a soft rim of
    ``feather`` (fraction of the radius)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r = np.sqrt(((xx + 0.5) / width * 2 - 1) ** 2 + ((yy + 0.5) / height * 2 - 1) ** 2)
    return np.clip((1.0 - r) / feather, 0.0, 1.0).astype(np.float32)


def rect_alpha(height: int, width: int, border: int = 2) -> np.ndarray:
    """(height, width) float32 matte of the whole rectangle with a ``border``-pixel soft edge."""
    ramp_y = np.minimum(np.arange(height) + 1, np.arange(height)[::-1] + 1) / (border + 1)
    ramp_x = np.minimum(np.arange(width) + 1, np.arange(width)[::-1] + 1) / (border + 1)
    return np.clip(np.minimum(ramp_y[:, None], ramp_x[None, :]), 0, 1).astype(np.float32)


# name -> (skimage.data loader, crop x1 y1 x2 y2 in source pixels, matte shape).
# Chosen by eye so every crop holds one distinct, recognisable object.
_INSTANCES = {
    "astronaut_face": ("astronaut", (150, 15, 305, 185), "ellipse"),
    "mission_patch": ("astronaut", (128, 342, 218, 428), "ellipse"),
    "shuttle_model": ("astronaut", (352, 0, 472, 285), "rect"),
    "coffee_cup": ("coffee", (70, 15, 485, 395), "ellipse"),
    "cat_face": ("chelsea", (40, 20, 410, 295), "ellipse"),
    "rocket": ("rocket", (285, 120, 365, 405), "rect"),
    "motorcycle": ("stereo_motorcycle", (90, 95, 690, 455), "rect"),
    "cameraman": ("camera", (130, 55, 345, 270), "rect"),
    "skimage_logo": ("logo", (8, 8, 492, 492), "ellipse"),
    "colour_wheel": ("colorwheel", (0, 0, 371, 370), "ellipse"),
    "tissue_blob": ("immunohistochemistry", (240, 295, 395, 475), "ellipse"),
    "big_coin": ("coins", (302, 12, 368, 90), "ellipse"),
}

# Photos (or parts) that hold no instance, cut into clutter patches.
_CLUTTER = {
    "hubble": ("hubble_deep_field", (0, 0, 1000, 872)),
    "page": ("page", (0, 0, 384, 191)),
    "text": ("text", (0, 0, 448, 172)),
    "cell": ("cell", (0, 0, 550, 660)),
    "moon": ("moon", (0, 0, 512, 512)),
    "retina": ("retina", (200, 200, 1200, 1200)),
    "coins_rows": ("coins", (0, 105, 384, 303)),
    "checkerboard": ("checkerboard", (0, 0, 200, 200)),
    "tissue": ("immunohistochemistry", (0, 0, 240, 290)),
    "launch_tower": ("rocket", (0, 0, 95, 427)),
    "garage_shelf": ("stereo_motorcycle", (340, 0, 741, 150)),
    "grass_field": ("camera", (350, 280, 512, 512)),
}

_TEXTURES = ("brick", "grass", "gravel")


def _load(source: str) -> np.ndarray:
    from skimage import data

    if source == "stereo_motorcycle":
        return data.stereo_motorcycle()[0]
    return getattr(data, source)()


@lru_cache(maxsize=1)
def load_instances() -> tuple[Asset, ...]:
    """The object instances of the synthetic benchmark, in a fixed order."""
    assets = []
    for name, (source, (x1, y1, x2, y2), shape) in _INSTANCES.items():
        image = np.asarray(_load(source))
        rgb = _as_rgb(image)[y1:y2, x1:x2]
        h, w = rgb.shape[:2]
        if shape == "ellipse":
            alpha = ellipse_alpha(h, w)
        else:
            alpha = rect_alpha(h, w)
        assets.append(Asset(name=name, rgb=rgb, alpha=alpha))
    return tuple(assets)


@lru_cache(maxsize=1)
def load_clutter() -> tuple[Asset, ...]:
    """Source photos for clutter patches (full-rectangle mattes)."""
    out = []
    for name, (source, (x1, y1, x2, y2)) in _CLUTTER.items():
        rgb = _as_rgb(_load(source))[y1:y2, x1:x2]
        out.append(Asset(name=name, rgb=rgb, alpha=np.ones(rgb.shape[:2], np.float32)))
    return tuple(out)


@lru_cache(maxsize=1)
def load_textures() -> tuple[np.ndarray, ...]:
    """Grey (H, W) uint8 textures for backgrounds."""
    from skimage import data

    return tuple(np.asarray(getattr(data, name)(), dtype=np.uint8) for name in _TEXTURES)
