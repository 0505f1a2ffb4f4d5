"""Every conf/backbone YAML builds (random weights) and turns images into the right PatchGrid."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from claid.backbones.base import Backbone

CONF = Path(__file__).resolve().parents[2] / "conf" / "backbone"
# full configs; short names (dino, dinov2, siglip) only pull one in (tests/test_configs.py)
NAMES = sorted(p.stem for p in CONF.glob("*.yaml") if "defaults" not in OmegaConf.load(p))
EXPECTED = {
    "dino_vits16",
    "dino_vits8",
    "dino_vitb16",
    "dino_vitb8",
    "dinov2_vitb14",
    "siglip_vitb16",
    "vit_b16_supervised",
}


def load(name: str, **overrides):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    cfg.pretrained = False
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def tiny(**overrides):
    """A small ViT on the dino_vits16 YAML, for behaviour that does not depend on size."""
    base = {"model_name": "vit_tiny_patch16_224.augreg_in21k", "embed_dim": 192}
    return load("dino_vits16", **{**base, **overrides})


def random_image(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_the_issue_backbones_all_have_a_yaml():
    assert EXPECTED <= set(NAMES)


@pytest.fixture(scope="module", params=NAMES)
def built(request):
    return request.param, instantiate(load(request.param))


def test_every_yaml_has_the_fixed_weight_keys(built):
    name, backbone = built
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    assert {"pretrained", "checkpoint", "_target_"} <= set(cfg.keys())
    assert isinstance(backbone, Backbone)
    assert not backbone.training


@pytest.mark.parametrize("height,width", [(40, 56), (44, 12)])
def test_patch_grid_shapes_on_small_non_square_images(built, height, width):
    # 44x12 is narrower than 2 patches for every patch size (8, 14, 16)
    name, backbone = built
    p = backbone.patch_size
    grid = backbone.extract_patches(random_image(height, width))
    expected = (max(height // p, 1), max(width // p, 1))
    assert grid.grid == expected, name
    assert grid.tokens.shape == (expected[0] * expected[1], backbone.embed_dim)
    assert grid.tokens.dtype == np.float32
    assert np.isfinite(grid.tokens).all()
    assert grid.scale == (1.0, 1.0)
    assert grid.image_size == (height, width)
    assert grid.patch_size == p


def test_prefix_tokens_are_dropped(built):
    # the patch tokens are the model's final features minus the CLS / register prefix
    name, backbone = built
    pixels = torch.randn(2, 3, 2 * backbone.patch_size, 3 * backbone.patch_size)
    with torch.no_grad():
        tokens = backbone(pixels)
        features = backbone.model.forward_features(pixels)
    assert tokens.shape == (2, 6, backbone.embed_dim)
    assert features.shape[1] == 6 + backbone.num_prefix_tokens
    torch.testing.assert_close(tokens, features[:, backbone.num_prefix_tokens :])


def test_large_image_is_resized_and_scale_maps_back():
    backbone = instantiate(tiny())
    grid = backbone.extract_patches(random_image(500, 700))
    # short side 500 > 355 -> 360 x 504, then crop to multiples of 16
    assert grid.grid == (360 // 16, 504 // 16)
    assert grid.scale == pytest.approx((500 / 360, 700 / 504))
    # the last patch column ends inside the original image, the box maps back to pixels
    box = grid.patch_boxes_to_pixels(np.array([[0, 0, grid.grid[1], grid.grid[0]]]))[0]
    assert box[2] == pytest.approx(504 // 16 * 16 * 700 / 504, rel=1e-5)
    assert box[3] <= 500


def test_random_weights_are_seeded():
    a = instantiate(tiny())
    b = instantiate(tiny())
    c = instantiate(tiny(seed=1))
    pixels = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(a(pixels), b(pixels))
        assert not torch.allclose(a(pixels), c(pixels))


def test_building_does_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    instantiate(tiny())
    torch.testing.assert_close(torch.rand(3), expected)


def test_keys_facet_is_the_last_blocks_key_projection():
    backbone = instantiate(tiny(facet="keys"))
    model = backbone.model
    pixels = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        keys = backbone(pixels)
        (before_last,) = model.forward_intermediates(
            pixels,
            indices=[len(model.blocks) - 2],
            intermediates_only=True,
            output_fmt="NLC",
            return_prefix_tokens=True,
        )
        patches, prefix = before_last
        x = torch.cat([prefix, patches], dim=1)
        qkv = model.blocks[-1].attn.qkv(model.blocks[-1].norm1(x))
    d = backbone.embed_dim
    assert keys.shape == (1, 6, d)
    torch.testing.assert_close(keys, qkv[:, 1:, d : 2 * d])


def test_intermediate_layer_differs_from_last():
    first = instantiate(tiny(layer=0))
    last = instantiate(tiny())
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert first(pixels).shape == last(pixels).shape
        assert not torch.allclose(first(pixels), last(pixels))


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"layer": 12}, "layer"),
        ({"facet": "attention"}, "facet"),
        ({"patch_size": 8}, "patch size"),
        ({"embed_dim": 384}, "embed dim"),
        ({"model_name": "vit_small_patch16_224.nope"}, "tag"),
        ({"model_name": "not_a_model"}, "no model"),
    ],
)
def test_bad_configs_fail_clearly(overrides, message):
    with pytest.raises(Exception, match=message) as info:
        instantiate(tiny(**overrides))
    assert isinstance(info.value.__cause__ or info.value, ValueError)


def test_misspelled_key_is_an_error():
    cfg = tiny()
    cfg.pretrainde = True
    with pytest.raises(Exception, match="pretrainde"):
        instantiate(cfg)


def test_inputs_off_the_patch_grid_are_rejected():
    backbone = instantiate(tiny())
    with pytest.raises(ValueError, match="multiple"):
        backbone(torch.zeros(1, 3, 30, 32))


def test_register_tokens_are_dropped_too():
    # DINOv2 with 4 registers: CLS + 4 registers precede the patch tokens
    backbone = instantiate(
        load(
            "dinov2_vitb14",
            model_name="vit_small_patch14_reg4_dinov2.lvd142m",
            embed_dim=384,
        )
    )
    assert backbone.num_prefix_tokens == 5
    pixels = torch.randn(1, 3, 28, 42)
    with torch.no_grad():
        tokens = backbone(pixels)
        features = backbone.model.forward_features(pixels)
    assert tokens.shape == (1, 6, 384) and features.shape[1] == 11
    torch.testing.assert_close(tokens, features[:, 5:])
