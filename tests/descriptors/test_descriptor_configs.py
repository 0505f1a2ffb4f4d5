"""Every conf/descriptor YAML builds (random weights) and describes regions and queries."""

from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from claid.descriptors.base import RegionDescriptor
from claid.descriptors.cnn import CNNRegionDescriptor
from claid.descriptors.vit_tokens import ViTTokenDescriptor
from claid.models.weights import WeightsUnavailableError, build_timm_model

CONF = Path(__file__).resolve().parents[2] / "conf"
NAMES = sorted(p.stem for p in (CONF / "descriptor").glob("*.yaml"))
BOXES = np.array(
    [[0, 0, 56, 40], [3.5, 2.0, 20.0, 30.0], [50, 35, 56, 40], [100, 100, 120, 120]],
    dtype=np.float32,
)  # whole image, a part, a few pixels in the corner, one outside the image


def root_config(descriptor: str, backbone: str = "dino_vitb8", **overrides):
    """The descriptor YAML under a root that also holds a backbone (vit_tokens
    interpolates ${backbone}), all with random weights."""
    root = OmegaConf.create(
        {
            "backbone": OmegaConf.load(CONF / "backbone" / f"{backbone}.yaml"),
            "descriptor": OmegaConf.load(CONF / "descriptor" / f"{descriptor}.yaml"),
        }
    )
    root.backbone.pretrained = False
    root.descriptor.pretrained = False
    for key, value in overrides.items():
        root.descriptor[key] = value
    return root


def build(descriptor: str, backbone: str = "dino_vitb8", **overrides) -> RegionDescriptor:
    return instantiate(root_config(descriptor, backbone, **overrides).descriptor)


def random_image(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def assert_unit_rows(vectors: np.ndarray, rows: int, dim: int) -> None:
    assert vectors.shape == (rows, dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


# descriptors that only work on one detector backbone
BACKBONE_OF = {"siglip_tokens": "siglip_vitb16"}


@pytest.fixture(scope="module", params=NAMES)
def built(request):
    return request.param, build(request.param, BACKBONE_OF.get(request.param, "dino_vitb8"))


def test_the_issue_descriptors_all_have_a_yaml():
    assert {"resnet50", "resnet101", "vgg16", "vit_tokens", "siglip_tokens"} <= set(NAMES)


def test_every_yaml_has_the_fixed_weight_keys(built):
    name, descriptor = built
    cfg = OmegaConf.load(CONF / "descriptor" / f"{name}.yaml")
    assert {"pretrained", "checkpoint", "_target_"} <= set(cfg.keys())
    assert isinstance(descriptor, RegionDescriptor)
    assert not descriptor.training


@pytest.mark.parametrize("height,width", [(40, 56), (44, 12)])
def test_regions_and_queries_on_small_non_square_images(built, height, width):
    # 44x12 is narrower than 2 patches (and than one ResNet layer-4 cell)
    name, descriptor = built
    image = random_image(height, width)
    grid = None
    if not descriptor.needs_image:
        grid = descriptor.backbone.extract_patches(image)
    vectors = descriptor.describe(image, BOXES, patch_grid=grid)
    assert_unit_rows(vectors, len(BOXES), descriptor.dim)
    for box in (None, (1.0, 2.0, 11.0, 30.0), (0.2, 0.2, 1.7, 1.9)):
        assert_unit_rows(descriptor.describe_query(image, box)[None], 1, descriptor.dim)


def test_cnn_layer_strides_and_dims():
    assert build("resnet50").stride == 32
    assert build("resnet50", layer="layer3", dim=1024).stride == 16
    assert build("vgg16").stride == 16


def test_cnn_gem_pools_the_box_cells_of_the_map():
    descriptor = build("resnet50", layer="layer4.1")
    image = random_image(100, 140)
    box = np.array([[33.0, 10.0, 97.0, 70.0]], dtype=np.float32)
    pixels, _ = descriptor.preprocess(image)
    with torch.no_grad():
        fmap = descriptor(pixels[None])[0].double()
    # layer 4 map of a 100x140 input is 4x5; the box touches columns 1..3, rows 0..2
    assert fmap.shape[1:] == (4, 5)
    region = fmap[:, 0:3, 1:4].reshape(2048, -1).clamp(min=1e-6)
    expected = region.pow(3).mean(1).pow(1 / 3).numpy()
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(descriptor.describe(image, box)[0], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_cnn_pooling_options_differ_from_gem(pooling):
    image = random_image(96, 128)
    gem_vec = build("resnet50").describe(image, BOXES[:2])
    other = build("resnet50", pooling=pooling).describe(image, BOXES[:2])
    assert_unit_rows(other, 2, 2048)
    assert not np.allclose(gem_vec, other, atol=1e-4)


def test_cnn_mask_pooling_uses_only_masked_cells():
    layer3 = {"layer": "layer3", "dim": 1024}
    descriptor = build("resnet50", mask_pooling=True, **layer3)
    image = random_image(64, 96)  # layer3 map: 4x6 cells of 16 px
    backbone_grid = instantiate(root_config("resnet50", "dino_vits16").backbone).extract_patches(
        image
    )
    assert backbone_grid.grid == (4, 6)  # detector patches of 16 px: same cells
    masks = np.zeros((1, 4, 6), dtype=bool)
    masks[0, 1:3, 2:5] = True
    box = np.array([[0, 0, 96, 64]], dtype=np.float32)
    with_mask = descriptor.describe(image, box, masks=masks, patch_grid=backbone_grid)
    pixels, _ = descriptor.preprocess(image)
    with torch.no_grad():
        fmap = descriptor(pixels[None])[0]
    cells = fmap[:, 1:3, 2:5].reshape(1024, -1).clamp(min=1e-6)
    expected = cells.pow(3).mean(1).pow(1 / 3).numpy()
    np.testing.assert_allclose(with_mask[0], expected / np.linalg.norm(expected), rtol=1e-4)
    # without the grid the masks are spread over the image: here the same cells
    np.testing.assert_allclose(descriptor.describe(image, box, masks=masks), with_mask, rtol=1e-5)
    # mask_pooling off: the masks are ignored
    plain = build("resnet50", **layer3).describe(image, box, masks=masks)
    assert not np.allclose(plain, with_mask, atol=1e-4)


def test_query_modes():
    image = random_image(120, 160)
    box = (20.0, 30.0, 90.0, 100.0)
    pool = build("resnet50", query="pool")
    crop = build("resnet50", query="crop")
    np.testing.assert_allclose(
        pool.describe_query(image, box), pool.describe(image, np.array([box]))[0], rtol=1e-6
    )
    cut = image.crop((20, 30, 90, 100))
    np.testing.assert_allclose(
        crop.describe_query(image, box),
        crop.describe(cut, np.array([[0, 0, 70, 70]]))[0],
        rtol=1e-6,
    )
    assert not np.allclose(crop.describe_query(image, box), pool.describe_query(image, box))
    with pytest.raises(ValueError, match="outside"):
        crop.describe_query(image, (500, 500, 600, 600))


def test_vit_tokens_mean_pools_normalised_tokens_under_the_mask():
    descriptor = build("vit_tokens", "dino_vits16")
    image = random_image(64, 96)
    grid = descriptor.backbone.extract_patches(image)
    masks = np.zeros((2, *grid.grid), dtype=bool)
    masks[0, 1:3, 2:5] = True
    masks[1, 0, 0] = True
    boxes = grid.patch_boxes_to_pixels(np.array([[2, 1, 5, 3], [0, 0, 1, 1]]))
    vectors = descriptor.describe(None, boxes, masks=masks, patch_grid=grid)
    tokens = grid.tokens / np.linalg.norm(grid.tokens, axis=1, keepdims=True)
    for r in range(2):
        expected = tokens[masks[r].reshape(-1)].mean(0)
        np.testing.assert_allclose(vectors[r], expected / np.linalg.norm(expected), rtol=1e-4)


def test_vit_tokens_queries():
    descriptor = build("vit_tokens", "dino_vits16", query="pool")
    image = random_image(64, 96)
    grid = descriptor.backbone.extract_patches(image)
    box = (16.0, 16.0, 64.0, 48.0)
    given = descriptor.describe_query(image, box, patch_grid=grid)
    np.testing.assert_allclose(given, descriptor.describe_query(image, box), rtol=1e-5)
    np.testing.assert_allclose(
        given, descriptor.describe(None, np.array([box]), patch_grid=grid)[0], rtol=1e-6
    )
    crop = build("vit_tokens", "dino_vits16", query="crop")
    assert crop.dim == 384
    assert not np.allclose(crop.describe_query(image, box), given, atol=1e-4)


def test_vit_tokens_copy_of_the_backbone_has_the_detectors_weights():
    root = root_config("vit_tokens", "dino_vits16")
    detector = instantiate(root.backbone)
    descriptor = instantiate(root.descriptor)
    pixels = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(descriptor.backbone(pixels), detector(pixels))


def test_vit_tokens_can_share_the_detector_or_go_without():
    root = root_config("vit_tokens", "dino_vits16")
    detector = instantiate(root.backbone)
    shared = ViTTokenDescriptor(backbone=detector, pretrained=False, dim=384)
    assert shared.backbone is detector
    bare = ViTTokenDescriptor(backbone=None, pretrained=False, dim=384, query="pool")
    image = random_image(64, 96)
    grid = detector.extract_patches(image)
    np.testing.assert_allclose(
        bare.describe_query(image, None, patch_grid=grid),
        shared.describe(None, np.array([[0, 0, 96, 64]]), patch_grid=grid)[0],
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="no backbone"):
        bare.describe_query(image, None)
    with pytest.raises(ValueError, match="patch_grid"):
        bare.describe(None, np.array([[0, 0, 5, 5]]))
    with pytest.raises(ValueError, match="dim"):
        ViTTokenDescriptor(backbone=detector, pretrained=False, dim=768)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"layer": "layer5"}, "no layer"),
        ({"dim": 1024}, "channels"),
        ({"pooling": "median"}, "pooling"),
        ({"query": "whole"}, "query"),
        ({"gem_p": 0.0}, "gem_p"),
    ],
)
def test_bad_cnn_configs_fail_clearly(overrides, message):
    with pytest.raises(Exception, match=message):
        build("resnet50", **overrides)


def test_misspelled_key_is_an_error():
    cfg = root_config("resnet50").descriptor
    cfg.polling = "max"
    with pytest.raises(Exception, match="polling"):
        instantiate(cfg)


def test_missing_published_weights_raise_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailableError, match="resnet50.tv_in1k") as info:
        CNNRegionDescriptor(
            model_name="resnet50.tv_in1k",
            pretrained=True,
            cache_dir=str(tmp_path),
            layer="layer4.0",
            dim=2048,
        )
    assert str(tmp_path) in str(info.value) and "checkpoint=" in str(info.value)


def test_descriptor_checkpoint_is_loaded(tmp_path):
    source = build("resnet50", seed=5)
    path = tmp_path / "resnet50.pth"
    weights = build_timm_model(
        "resnet50.tv_in1k", pretrained=False, checkpoint=None, seed=5, num_classes=0
    )
    torch.save(weights.state_dict(), path)
    loaded = build("resnet50", checkpoint=str(path))
    image = random_image(64, 64)
    np.testing.assert_allclose(
        loaded.describe(image, BOXES[:1]), source.describe(image, BOXES[:1]), rtol=1e-5
    )


def test_swav_style_checkpoint_loads_with_a_warning(tmp_path):
    # SwAV's release: DDP "module." prefix, plus projection head and prototypes
    weights = build_timm_model(
        "resnet50.tv_in1k", pretrained=False, checkpoint=None, seed=7, num_classes=0
    )
    state = {f"module.{k}": v for k, v in weights.state_dict().items()}
    state["module.projection_head.0.weight"] = torch.zeros(8, 2048)
    state["module.prototypes.weight"] = torch.zeros(3, 8)
    path = tmp_path / "swav_800ep_pretrain.pth.tar"
    torch.save(state, path)
    with pytest.warns(UserWarning, match="2 entries unused"):
        loaded = build("resnet50", checkpoint=str(path), layer="layer4.1")
    reference = build("resnet50", seed=7, layer="layer4.1")
    image = random_image(64, 64)
    np.testing.assert_allclose(
        loaded.describe(image, BOXES[:1]), reference.describe(image, BOXES[:1]), rtol=1e-5
    )


def test_command_line_overrides_reach_both_networks(compose_cfg):
    # `python run.py backbone.pretrained=false descriptor.pretrained=false`
    cfg = compose_cfg(
        "backbone=dino_vits16",
        "descriptor=vit_tokens",
        "backbone.pretrained=false",
        "descriptor.pretrained=false",
    )
    detector = instantiate(cfg.backbone)
    descriptor = instantiate(cfg.descriptor)
    assert descriptor.dim == detector.embed_dim == 384
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(descriptor.backbone(pixels), detector(pixels))
    # vit_tokens follows the backbone's weight switches unless told otherwise
    assert compose_cfg("descriptor=vit_tokens").descriptor.pretrained is True
    follows = compose_cfg("backbone.pretrained=false", "descriptor=vit_tokens")
    assert follows.descriptor.pretrained is False
