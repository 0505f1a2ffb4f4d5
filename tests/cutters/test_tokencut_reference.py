"""cutter=tokencut equals TokenCut's own ``ncut`` (tests/reference/tokencut_object_discovery.py,
copied verbatim, MIT) on identical tokens: planted maps with a clear eigen-gap and the
keys of scikit-image photos through a random-weight DINO ViT-S/16 (zero-padded, as
TokenCut feeds images); plus MaskCut's corner rule with its re-chosen seed, by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from claid.cutters import tokencut as tokencut_module
from claid.cutters.planted import planted_token_map
from claid.cutters.single_cut import TokenCutCutter
from claid.cutters.tokencut import maskcut_masks, tokencut_mask
from claid.structures import PatchGrid

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "tokencut_object_discovery.py"


def _reference():
    spec = importlib.util.spec_from_file_location("tokencut_reference", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reference_mask(tokens: np.ndarray, grid: tuple[int, int], tau: float = 0.2) -> np.ndarray:
    """TokenCut's ncut on (N, D) tokens, a dummy CLS row in front (ncut drops it), in
    float64 so both sides threshold the same cosines; dims = [rows, cols] as
    main_tokencut.py passes them ([w_featmap, h_featmap] = [H // P, W // P])."""
    feats = torch.from_numpy(np.concatenate([np.zeros((1, tokens.shape[1])), tokens]).astype(np.float64))[None]
    patch = 16
    size = (3, grid[0] * patch, grid[1] * patch)
    _, _, mask, _, _, _ = _reference().ncut(feats, list(grid), [patch, patch], size, tau)
    return mask.astype(bool)


def _iou(a, b):
    return np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("grid", [(14, 14), (12, 18), (20, 11)])
def test_tokencut_equals_the_reference_on_planted_maps(seed, grid):
    planted = planted_token_map(grid=grid, dim=64, n_objects=2, n_clutter=0, noise=0.5, seed=seed)
    ours = tokencut_mask(planted.tokens, grid)
    ref = _reference_mask(planted.tokens, grid)
    assert ours.any() and ref.any()
    assert _iou(ours, ref) >= 0.99


@pytest.fixture(scope="module")
def photo_keys():
    """Keys of the last block of a random-weight DINO ViT-S/16 on six skimage photos
    (downscaled, zero-padded to the grid as TokenCut does): [(PatchGrid, name)]."""
    from PIL import Image
    from skimage import data

    from claid.backbones.timm_vit import TimmViTBackbone

    backbone = TimmViTBackbone(model_name="vit_small_patch16_224.dino", pretrained=False, patch_size=16,
                               embed_dim=384, facet="keys", short_side=None, max_long_side=None,
                               grid_fit="pad")
    grids = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry"):
        photo = Image.fromarray(getattr(data, name)()).convert("RGB")
        photo = photo.resize((int(photo.width * 200 / photo.height), 200))
        pixels, scale = backbone.preprocess(photo)
        with torch.no_grad():
            tokens = backbone(pixels[None])[0].numpy().astype(np.float64)
        grid = (pixels.shape[1] // 16, pixels.shape[2] // 16)
        grids.append((PatchGrid(tokens=tokens.astype(np.float32), grid=grid, patch_size=16, scale=scale,
                                image_size=(photo.height, photo.width)), name))
    return grids


def test_tokencut_equals_the_reference_on_photo_keys(photo_keys):
    cutter = TokenCutCutter()
    for patch_grid, name in photo_keys:
        tree = cutter(patch_grid)
        ref = _reference_mask(patch_grid.tokens.astype(np.float64), patch_grid.grid)
        assert len(tree) == 1 == int(ref.any()), name  # one region each
        assert _iou(tree.masks[0], ref) >= 0.99, name


def test_maskcut_corner_rule_flips_and_re_chooses_the_seed(monkeypatch):
    """A hand-built eigenvector on a 6 x 8 grid: the frame (all four corners) is above
    the mean and holds argmax |x|, so TokenCut keeps the frame; MaskCut's corner rule
    flips to the interior, where the seed is re-chosen as argmax(-x): the right blob
    (-3), not the left one (-1), and not the frame's old seed."""
    x = np.full((6, 8), 0.5)
    x[0, 3] = 5.0                      # argmax |x|: in the frame (foreground before the flip)
    x[2:4, 1:3] = -1.0                 # left blob
    x[2:5, 5:7] = -2.0                 # right blob
    x[3, 6] = -3.0                     # argmax(-x)
    x[:, 4] = 0.5                      # a column of frame between the blobs
    monkeypatch.setattr(tokencut_module, "second_eigenvector", lambda *a, **k: x.reshape(-1).copy())
    tokens = np.ones((48, 4))
    (mask,) = maskcut_masks(tokens, (6, 8), n_masks=1)
    right = np.zeros((6, 8), dtype=bool)
    right[2:5, 5:7] = True
    assert np.array_equal(mask, right)
    # TokenCut on the same vector: the seed argmax |x| is foreground, no flip, the frame
    frame = tokencut_mask(tokens, (6, 8))
    assert frame[0, 0] and frame[0, 3] and not frame[right].any()
    # without the corner rule, MaskCut would have kept the frame like TokenCut
    x[0, 0] = x[0, -1] = x[-1, 0] = -0.1   # now only one corner is foreground
    (kept,) = maskcut_masks(tokens, (6, 8), n_masks=1)
    assert kept[0, 3] and not kept[right].any()
