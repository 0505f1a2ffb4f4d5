"""claid's DINOv2 tokens equal the official DINOv2 code's (issue 20).

The reference is facebookresearch/dinov2's ``dinov2/models`` and ``dinov2/layers``,
copied verbatim into ``tests/reference/dinov2/``, built as ``dinov2/hub/backbones.py``
builds the hub models (``img_size=518``, ``init_values=1.0``, ``block_chunks=0``; the
register models with ``num_register_tokens=4, interpolate_antialias=True,
interpolate_offset=0.0``). Seeded weights with a smooth position table are saved as a
release ``.pth`` (the state dict the hub loads, ``mask_token`` and ``register_tokens``
included) and loaded by claid through ``checkpoint=``.
"""

import importlib
import sys
from pathlib import Path

import pytest
import torch

from claid.backbones.timm_vit import TimmViTBackbone
from tests.backbones.test_official_tokens import _compare, smooth_table

REFERENCE = Path(__file__).resolve().parents[1] / "reference"

# (rows, cols): the paper's 360 x 480 input at /14, its portrait, the table's square
# grid (37 x 37, the only case both skip the resampling), the table's count on a
# non-square grid (1 x 1369) and a small one
GRIDS = [(25, 34), (34, 25), (37, 37), (1, 1369), (10, 13)]


def _dinov2_vits():
    saved = sys.path[:]
    sys.path.insert(0, str(REFERENCE))
    try:
        return importlib.import_module("dinov2.models.vision_transformer")
    finally:
        sys.path[:] = saved


def _release_file(tmp_path, registers: int, seed: int = 0):
    vits = _dinov2_vits()
    torch.manual_seed(seed)
    hub_kwargs = dict(img_size=518, patch_size=14, init_values=1.0, ffn_layer="mlp", block_chunks=0,
                      num_register_tokens=registers)
    if registers:
        hub_kwargs.update(interpolate_antialias=True, interpolate_offset=0.0)
    model = vits.vit_base(**hub_kwargs).eval()
    with torch.no_grad():
        model.pos_embed.copy_(smooth_table(37, model.embed_dim, seed))
        # trained layer scales and tokens are far from their init (1.0, zeros)
        for name, p in model.named_parameters():
            if name.endswith(("ls1.gamma", "ls2.gamma")):
                p.copy_(torch.empty_like(p).uniform_(0.05, 0.5))
        model.cls_token.normal_(0, 0.5)
        model.mask_token.normal_(0, 0.5)
        if registers:
            model.register_tokens.normal_(0, 0.5)
    name = f"dinov2_vitb14{'_reg4' if registers else ''}_pretrain.pth"
    path = tmp_path / name
    torch.save(model.state_dict(), path)
    return model, path


def _keys_of(reference, block_index: int, pixels, embed_dim: int, prefix: int):
    keys = []
    hook = reference.blocks[block_index].attn.qkv.register_forward_hook(lambda _m, _i, out: keys.append(out))
    try:
        reference.get_intermediate_layers(pixels, n=[block_index])
    finally:
        hook.remove()
    return keys[0][:, prefix:, embed_dim:2 * embed_dim]


@pytest.mark.parametrize("registers,model_name,rule", [
    (0, "vit_base_patch14_dinov2.lvd142m", "dinov2"),
    (4, "vit_base_patch14_reg4_dinov2.lvd142m", "dinov2_reg"),
])
def test_tokens_and_keys_equal_official_dinov2(tmp_path, registers, model_name, rule):
    reference, path = _release_file(tmp_path, registers)
    depth = len(reference.blocks)
    for layer in (-1, depth // 2):
        block_index = layer % depth
        ours = TimmViTBackbone(model_name=model_name, pretrained=False, checkpoint=str(path),
                               patch_size=14, embed_dim=768, layer=layer)
        ours_keys = TimmViTBackbone(model_name=model_name, pretrained=False, checkpoint=str(path),
                                    patch_size=14, embed_dim=768, layer=layer, facet="keys")
        assert ours.pos_resample == rule
        for rows, cols in GRIDS if layer == -1 else GRIDS[::3]:  # middle layer: 25x34, 1x1369
            torch.manual_seed(rows * 1000 + cols)
            pixels = torch.randn(1, 3, rows * 14, cols * 14)
            with torch.no_grad():
                # get_intermediate_layers(norm=True) drops CLS and registers, applies the final norm
                (theirs,) = reference.get_intermediate_layers(pixels, n=[block_index], norm=True)
                theirs_keys = _keys_of(reference, block_index, pixels, 768, 1 + registers)
                tokens, keys = ours(pixels), ours_keys(pixels)
            cos, rel = _compare(tokens, theirs)
            assert cos >= 0.99999 and rel <= 1e-4, (layer, rows, cols, cos, rel)
            cos, rel = _compare(keys, theirs_keys)
            assert cos >= 0.99999 and rel <= 1e-4, ("keys", layer, rows, cols, cos, rel)


def test_register_file_under_the_plain_rule_differs(tmp_path):
    """A register model is not a plain one: under the plain DINOv2 rule (offset 0.1, no
    antialias) its tokens move measurably, so the test above can fail."""
    reference, path = _release_file(tmp_path, 4)
    wrong = TimmViTBackbone(model_name="vit_base_patch14_reg4_dinov2.lvd142m", pretrained=False,
                            checkpoint=str(path), patch_size=14, embed_dim=768, pos_resample="dinov2")
    pixels = torch.randn(1, 3, 25 * 14, 34 * 14)
    with torch.no_grad():
        (theirs,) = reference.get_intermediate_layers(pixels, n=1, norm=True)
        _, rel = _compare(wrong(pixels), theirs)
    assert rel > 1e-3


def test_release_file_mapping_is_strict(tmp_path):
    """The release file maps by a listed rule (``mask_token`` dropped, ``register_tokens``
    -> ``reg_token``); a file missing any other weight is refused, not left random."""
    _, path = _release_file(tmp_path, 4)
    weights = torch.load(path, weights_only=True)
    assert {"mask_token", "register_tokens"} <= set(weights)
    del weights["blocks.3.ls1.gamma"]
    broken = tmp_path / "broken.pth"
    torch.save(weights, broken)
    with pytest.raises(RuntimeError, match="missing from the file"):
        TimmViTBackbone(model_name="vit_base_patch14_reg4_dinov2.lvd142m", pretrained=False,
                        checkpoint=str(broken), patch_size=14, embed_dim=768)
