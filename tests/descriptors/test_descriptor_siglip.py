"""siglip_tokens: region tokens through SigLIP's attention-pool head, texts through its text tower."""

from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from claid.models.weights import WeightsUnavailableError

CONF = Path(__file__).resolve().parents[2] / "conf"


def root_config(backbone: str = "siglip_vitb16", **overrides):
    root = OmegaConf.create(
        {
            "backbone": OmegaConf.load(CONF / "backbone" / f"{backbone}.yaml"),
            "descriptor": OmegaConf.load(CONF / "descriptor" / "siglip_tokens.yaml"),
        }
    )
    root.backbone.pretrained = False
    root.descriptor.pretrained = False
    for key, value in overrides.items():
        root.descriptor[key] = value
    return root


@pytest.fixture(scope="module")
def siglip():
    return instantiate(root_config().descriptor)


def random_image(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_whole_image_region_is_siglips_image_embedding(siglip):
    image = random_image(48, 80)
    vector = siglip.describe(image, np.array([[0, 0, 80, 48]]))[0]
    model = siglip.backbone.model
    pixels, _ = siglip.backbone.preprocess(image)
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(pixels[None]))[0].numpy()
    np.testing.assert_allclose(vector, expected / np.linalg.norm(expected), rtol=1e-4, atol=1e-6)


def test_regions_pool_only_their_masked_tokens(siglip):
    image = random_image(64, 96)
    grid = siglip.backbone.extract_patches(image)
    masks = np.zeros((2, *grid.grid), dtype=bool)
    masks[0, 1:3, 2:5] = True
    masks[1, 0, :2] = True
    boxes = grid.patch_boxes_to_pixels(np.array([[2, 1, 5, 3], [0, 0, 2, 1]]))
    vectors = siglip.describe(image, boxes, masks=masks, patch_grid=grid)
    assert vectors.shape == (2, 768) and vectors.dtype == np.float32
    for r in range(2):
        tokens = torch.from_numpy(grid.tokens[masks[r].reshape(-1)])
        with torch.no_grad():
            expected = siglip.backbone.model.attn_pool(tokens[None])[0].numpy()
        # atol: regions are pooled together (other float summation order), ~3e-8 apart
        np.testing.assert_allclose(vectors[r], expected / np.linalg.norm(expected), rtol=1e-4,
                                   atol=1e-6)


def test_queries_have_one_unit_vector(siglip):
    image = random_image(44, 12)  # narrower than one patch
    vector = siglip.describe_query(image, (0.0, 0.0, 12.0, 30.0))
    assert vector.shape == (768,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, rel=1e-5)


def test_text_embeddings_through_a_local_tokenizer(siglip, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["</s>", "<unk>", "a", "red", "car", "blue", "mug"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="</s>", unk_token="<unk>"
    ).save_pretrained(tmp_path)
    siglip.tokenizer_name = str(tmp_path)
    siglip._tokenizer = None
    texts = siglip.encode_text(["a red car", "a blue mug", "a red car"])
    assert texts.shape == (3, 768) and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(texts[0], texts[2], rtol=1e-5)
    assert not np.allclose(texts[0], texts[1], atol=1e-4)
    assert siglip.encode_text([]).shape == (0, 768)
    with pytest.raises(ValueError, match="list of strings"):
        siglip.encode_text("a red car")


def test_missing_tokenizer_raises_one_clear_error(siglip, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(siglip, "_tokenizer", None)
    monkeypatch.setattr(siglip, "tokenizer_name", "google/siglip-base-patch16-224")
    monkeypatch.setattr(siglip, "cache_dir", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="siglip-base-patch16-224") as info:
        siglip.encode_text(["a red car"])
    assert str(tmp_path) in str(info.value)


def test_missing_published_text_weights_raise_one_clear_error(monkeypatch, tmp_path):
    from claid.descriptors.siglip_tokens import build_text_tower

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailableError, match="text tower"):
        build_text_tower(
            "google/siglip-base-patch16-224", pretrained=True, seed=0, cache_dir=str(tmp_path)
        )


def test_a_backbone_without_attention_pool_is_refused():
    with pytest.raises(Exception, match="attention-pool"):
        instantiate(root_config("dino_vits16").descriptor)


def test_all_regions_at_once_equal_one_region_at_a_time(siglip):
    """The masked, batched head gives each region what the head gives its tokens
    alone: masks inside, across and outside their boxes (outside: the box)."""
    from claid.descriptors.pooling import boxes_to_cells

    image = random_image(80, 112, seed=3)
    grid = siglip.backbone.extract_patches(image)
    h, w = grid.grid
    rng = np.random.default_rng(5)
    corners = np.sort(rng.integers(0, min(h, w), (7, 2, 2)), axis=1)
    patch_boxes = np.concatenate([corners[:, 0], corners[:, 1] + 1], axis=1)[:, [1, 0, 3, 2]]
    boxes = grid.patch_boxes_to_pixels(patch_boxes)
    masks = rng.random((7, h, w)) > 0.5
    masks[0] = False
    masks[0, -1, -1] = True  # outside its box (unless the box reaches the corner)
    vectors = siglip.pool(None, boxes, (1.0, 1.0), masks=masks, patch_grid=grid)
    cells = boxes_to_cells(boxes, grid.scale, grid.patch_size, grid.grid)
    tokens = torch.from_numpy(grid.tokens)
    for r, (x1, y1, x2, y2) in enumerate(cells.tolist()):
        keep = np.zeros((h, w), dtype=bool)
        keep[y1:y2, x1:x2] = True
        if (keep & masks[r]).any():
            keep &= masks[r]
        with torch.no_grad():
            expected = siglip.attention_pool(tokens[torch.from_numpy(keep.reshape(-1))]).numpy()
        np.testing.assert_allclose(vectors[r], expected / np.linalg.norm(expected),
                                   rtol=1e-4, atol=1e-6)
    assert siglip.pool(None, np.zeros((0, 4)), (1.0, 1.0), patch_grid=grid).shape == (0, 768)
