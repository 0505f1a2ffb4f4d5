"""Tiny components that keep the claid contracts, and a folder of good, odd and bad files
(imported by conftest.py and the tests).

The engine is tested with these instead of the real backbones/cutters/descriptors so
the tests run in seconds and do not depend on other packages' progress.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from torch import nn

from claid.backbones.base import Backbone
from claid.descriptors.base import RegionDescriptor
from claid.structures import PatchGrid, RegionTree


def _to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 255.0 - 0.5
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _cap(image: Image.Image, max_side: int) -> Image.Image:
    scale = max_side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.BILINEAR)


class TinyBackbone(Backbone):
    """Patch-8 "ViT": one strided conv; keeps aspect, long side <= 64, crops to the grid."""

    patch_size = 8
    embed_dim = 16

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(3, self.embed_dim, kernel_size=8, stride=8)
        self.mix = nn.Conv2d(self.embed_dim, self.embed_dim, kernel_size=1)

    def preprocess(self, image):
        resized = _cap(image, 64)
        h = resized.height // 8 * 8
        w = resized.width // 8 * 8
        pixels = _to_tensor(resized)[:, :h, :w]
        return pixels, (image.height / resized.height, image.width / resized.width)

    def forward(self, pixels):
        features = self.mix(torch.relu(self.embed(pixels)))
        return features.flatten(2).transpose(1, 2)


class TinyDescriptor(RegionDescriptor):
    """One conv (stride 2) + box average pooling, 12-d."""

    dim = 12

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, self.dim, kernel_size=3, stride=2, padding=1)

    def preprocess(self, image):
        resized = _cap(image, 96)
        return _to_tensor(resized), (image.height / resized.height, image.width / resized.width)

    def forward(self, pixels):
        return torch.relu(self.conv(pixels)) + 0.01

    def pool(self, feature_map, boxes, scale, masks=None, patch_grid=None, mask_cell_px=None):
        fmap = feature_map.float().cpu().numpy()
        _, fh, fw = fmap.shape
        sy, sx = scale
        out = []
        for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64):
            c1 = min(int(x1 / (2 * sx)), fw - 1)
            r1 = min(int(y1 / (2 * sy)), fh - 1)
            c2 = max(int(np.ceil(x2 / (2 * sx))), c1 + 1)
            r2 = max(int(np.ceil(y2 / (2 * sy))), r1 + 1)
            out.append(fmap[:, r1:r2, c1:c2].mean(axis=(1, 2)))
        vectors = np.asarray(out, dtype=np.float32).reshape(-1, self.dim)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class TinyTokenDescriptor(RegionDescriptor):
    """Needs no image: the mean of the detector tokens under each region's mask."""

    dim = TinyBackbone.embed_dim
    needs_image = False

    def pool(self, feature_map, boxes, scale, masks=None, patch_grid=None, mask_cell_px=None):
        if feature_map is not None:
            raise AssertionError("a token descriptor must not receive a feature map")
        tokens = patch_grid.tokens.astype(np.float64)
        if masks is None:  # box pooling: the patches whose centres lie in each box
            h, w = patch_grid.grid
            cy = (np.arange(h) + 0.5) * patch_grid.patch_size * patch_grid.scale[0]
            cx = (np.arange(w) + 0.5) * patch_grid.patch_size * patch_grid.scale[1]
            masks = [((cy[:, None] >= y1) & (cy[:, None] < y2)) & ((cx[None] >= x1) & (cx[None] < x2))
                     for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64)]
        vectors = np.stack([tokens[m.reshape(-1)].mean(axis=0) for m in masks])
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _tight_box(mask: np.ndarray) -> list[int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def tiny_cutter(patch_grid: PatchGrid, quantile: float = 0.5) -> RegionTree:
    """Deterministic toy decomposition: high-norm patches (above the ``quantile`` of
    the norms; depth 1), the left half (depth 1), and the top half of the high-norm
    set (depth 2, child of the first). Another ``quantile`` is "another cutter"."""
    h, w = patch_grid.grid
    norms = np.linalg.norm(patch_grid.tokens.astype(np.float64), axis=1).reshape(h, w)
    candidates = []
    # a margin so that float noise between identical patches never makes a region
    high = norms > np.quantile(norms, quantile) + 1e-4 * (1.0 + norms.max())
    if high.any():
        candidates.append((high, 1, -1))
    left = np.zeros((h, w), bool)
    left[:, : w // 2] = True
    if left.any():
        candidates.append((left, 1, -1))
    top = high.copy()
    top[(h + 1) // 2:] = False
    if high.any() and top.any():
        candidates.append((top, 2, 0))
    if not candidates:
        return RegionTree.empty((h, w))
    masks = np.stack([c[0] for c in candidates])
    return RegionTree(
        masks=masks,
        boxes=np.array([_tight_box(m) for m in masks], dtype=np.int64),
        parent=np.array([c[2] for c in candidates], dtype=np.int64),
        depth=np.array([c[1] for c in candidates], dtype=np.int64),
        connectivity=np.ones(len(candidates), np.float32),
        energy_share=np.ones(len(candidates), np.float32),
        n_cuts=len(candidates),
        n_nodes=len(candidates) + 1,
        grid=(h, w),
    )


@pytest.fixture
def components():
    return TinyBackbone().eval(), tiny_cutter, TinyDescriptor().eval()


def _write_png16_rgb(path, rgb16: np.ndarray) -> None:
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header))
        f.write(chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


GOOD = ["astronaut.jpg", "coffee.jpg", "chelsea.png", "rocket.jpg", "camera.png",
        "astronaut_wide.jpg"]
ODD = ["gray.png", "cmyk.jpg", "rgba.png", "gray16.png", "rgb16.png", "exif_rotated.jpg",
       "blank.png"]
BAD = {"truncated.jpg": "truncated", "empty.jpg": "empty file", "notes.jpg": "not an image",
       "tiny.png": "smaller than one"}


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """Real photos (skimage) at a few sizes, odd-but-valid files and bad files.

    Returns (root, [(image_id, path)]) in a fixed order.
    """
    root = tmp_path_factory.mktemp("images")

    def photo(name, size):
        return Image.fromarray(getattr(skdata, name)()).resize(size, Image.BILINEAR)

    photo("astronaut", (64, 48)).save(root / "astronaut.jpg", quality=95)
    photo("coffee", (48, 64)).save(root / "coffee.jpg", quality=95)
    photo("chelsea", (72, 56)).save(root / "chelsea.png")
    photo("rocket", (64, 48)).save(root / "rocket.jpg", quality=95)
    photo("camera", (56, 56)).convert("RGB").save(root / "camera.png")
    photo("astronaut", (120, 40)).save(root / "astronaut_wide.jpg", quality=95)

    chelsea = np.asarray(photo("chelsea", (64, 48)))
    Image.fromarray(chelsea).convert("L").save(root / "gray.png")
    Image.fromarray(chelsea).convert("CMYK").save(root / "cmyk.jpg", quality=95)
    rgba = np.dstack([chelsea, np.full(chelsea.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(root / "rgba.png")
    Image.fromarray(chelsea[..., 0].astype(np.uint16) * 257).save(root / "gray16.png")
    _write_png16_rgb(root / "rgb16.png", chelsea.astype(np.uint16) * 257)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    Image.fromarray(np.asarray(photo("coffee", (72, 40)))).save(
        root / "exif_rotated.jpg", quality=95, exif=exif.tobytes())
    # one patch column of flat grey: the tiny cutter finds no region in it
    Image.new("RGB", (12, 40), (120, 120, 120)).save(root / "blank.png")

    blob = (root / "astronaut.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(blob[: len(blob) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("not a picture\n" * 10)
    Image.new("RGB", (4, 4), (10, 200, 30)).save(root / "tiny.png")

    names = GOOD + ODD + list(BAD)
    return root, [(name, str(root / name)) for name in names]
