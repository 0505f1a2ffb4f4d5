"""claid's DINO tokens equal the official DINO code's (issue 20).

The reference is facebookresearch/dino's own ``vision_transformer.py``, copied verbatim
into ``tests/reference/``. Its seeded weights get a smooth position table (low-frequency
2-D sinusoids per channel, amplitude ~0.5, like a trained one), are saved as a release
``.pth`` and loaded by claid through ``checkpoint=``. Inputs of several grids: non-square,
square at the table's size (the only case both skip the resampling), and non-square with
the table's patch count.
"""

import importlib.util
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from claid.backbones.pos_embed import default_rule, resample_patch_table
from claid.backbones.timm_vit import TimmViTBackbone

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "dino_vision_transformer.py"


def _dino_module():
    utils = types.ModuleType("utils")  # DINO's utils.py: only trunc_normal_ is used
    utils.trunc_normal_ = torch.nn.init.trunc_normal_
    saved = sys.modules.get("utils")
    sys.modules["utils"] = utils
    try:
        spec = importlib.util.spec_from_file_location("dino_reference_vit", REFERENCE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            sys.modules.pop("utils", None)
        else:
            sys.modules["utils"] = saved
    return module


def smooth_table(side: int, dim: int, seed: int) -> torch.Tensor:
    """(1, 1 + side*side, dim): a CLS entry plus low-frequency 2-D sinusoids per channel."""
    rng = np.random.default_rng(seed)
    ys, xs = np.meshgrid(np.linspace(0, 1, side), np.linspace(0, 1, side), indexing="ij")
    fy, fx = rng.uniform(0.3, 2.0, (2, dim))
    phase = rng.uniform(0, 2 * np.pi, (2, dim))
    field = 0.5 * np.sin(2 * np.pi * (fy * ys[..., None]) + phase[0]) * np.cos(2 * np.pi * (fx * xs[..., None]) + phase[1])
    cls = rng.normal(0, 0.02, (1, dim))
    table = np.concatenate([cls, field.reshape(side * side, dim)], axis=0)[None]
    return torch.tensor(table, dtype=torch.float32)


def _release_file(tmp_path, arch: str, patch: int, seed: int = 0) -> tuple[torch.nn.Module, Path]:
    dino = _dino_module()
    torch.manual_seed(seed)
    model = getattr(dino, arch)(patch_size=patch).eval()
    side = 224 // patch
    with torch.no_grad():
        model.pos_embed.copy_(smooth_table(side, model.embed_dim, seed))
    path = tmp_path / f"{arch}{patch}_pretrain.pth"
    torch.save(model.state_dict(), path)  # DINO's release files are this state dict
    return model, path


def _compare(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[float, float]:
    a, b = ours.double(), theirs.double()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).min().item()
    rel = ((a - b).abs().max() / b.abs().max()).item()
    return cos, rel


GRIDS = [(15, 20), (14, 14), (7, 28), (20, 13)]  # (rows, cols); 14x14 = the table, 7x28 its count


@pytest.mark.parametrize("arch,patch,model_name,embed_dim", [
    ("vit_small", 16, "vit_small_patch16_224.dino", 384),
    ("vit_base", 8, "vit_base_patch8_224.dino", 768),
])
def test_tokens_and_keys_equal_official_dino(tmp_path, arch, patch, model_name, embed_dim):
    reference, path = _release_file(tmp_path, arch, patch)
    depth = len(reference.blocks)
    grids = GRIDS if patch == 16 else [(15, 20), (28, 28), (14, 56)]  # B/8: table 28x28
    for layer in (-1, depth // 2):
        ours_tokens = TimmViTBackbone(model_name=model_name, pretrained=False, checkpoint=str(path),
                                      patch_size=patch, embed_dim=embed_dim, layer=layer)
        ours_keys = TimmViTBackbone(model_name=model_name, pretrained=False, checkpoint=str(path),
                                    patch_size=patch, embed_dim=embed_dim, layer=layer, facet="keys")
        assert ours_tokens.pos_resample == "dino"
        for rows, cols in grids:
            torch.manual_seed(rows * 100 + cols)
            pixels = torch.randn(1, 3, rows * patch, cols * patch)
            with torch.no_grad():
                # DINO: get_intermediate_layers applies the final norm to every returned block
                n_last = depth - (layer % depth)
                theirs = reference.get_intermediate_layers(pixels, n=n_last)[0][:, 1:]
                keys = []
                block = reference.blocks[layer % depth]
                hook = block.attn.qkv.register_forward_hook(lambda _m, _i, out, keys=keys: keys.append(out))
                reference.get_intermediate_layers(pixels, n=1)
                hook.remove()
                theirs_keys = keys[0][:, 1:, embed_dim:2 * embed_dim]
                tokens = ours_tokens(pixels)
                our_keys = ours_keys(pixels)
            cos, rel = _compare(tokens, theirs)
            assert cos >= 0.99999 and rel <= 1e-4, (layer, rows, cols, cos, rel)
            cos, rel = _compare(our_keys, theirs_keys)
            assert cos >= 0.99999 and rel <= 1e-4, ("keys", layer, rows, cols, cos, rel)


def test_timm_rule_differs_from_dino_on_non_square_grids(tmp_path):
    """The old behaviour (timm's antialiased resampling) is still selectable and is
    measurably not DINO's, so the test above would fail under it."""
    reference, path = _release_file(tmp_path, "vit_small", 16)
    timm_rule = TimmViTBackbone(model_name="vit_small_patch16_224.dino", pretrained=False, checkpoint=str(path),
                                patch_size=16, embed_dim=384, pos_resample="timm")
    pixels = torch.randn(1, 3, 15 * 16, 20 * 16)
    with torch.no_grad():
        theirs = reference.get_intermediate_layers(pixels, n=1)[0][:, 1:]
        cos, rel = _compare(timm_rule(pixels), theirs)
    assert rel > 1e-3


def test_default_rules_per_model():
    assert default_rule("vit_base_patch8_224.dino") == "dino"
    assert default_rule("vit_small_patch16_224.dino") == "dino"
    assert default_rule("vit_base_patch14_dinov2.lvd142m") == "dinov2"
    assert default_rule("vit_base_patch14_reg4_dinov2.lvd142m") == "dinov2_reg"
    assert default_rule("vit_base_patch16_siglip_224.webli") == "transformers"
    assert default_rule("vit_base_patch16_224.augreg2_in21k_ft_in1k") == "timm"


def test_dino_rule_skips_only_square_inputs_of_the_table_count():
    table = smooth_table(14, 8, 1)[:, 1:]
    same = resample_patch_table(table, 14, 14, rule="dino", square_input=True)
    assert same is table
    # 7 x 28 has the table's count but is not square: DINO resamples it
    moved = resample_patch_table(table, 7, 28, rule="dino", square_input=False)
    assert moved.shape == (1, 196, 8) and not torch.equal(moved, table)
    # the offset rule against DINO's formula written out
    grid = table.reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    want = torch.nn.functional.interpolate(grid, scale_factor=((15 + 0.1) / math.sqrt(196), (20 + 0.1) / 14),
                                           mode="bicubic").permute(0, 2, 3, 1).reshape(1, -1, 8)
    assert torch.allclose(resample_patch_table(table, 15, 20, rule="dino", square_input=False), want)


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="pos_resample must be one of"):
        TimmViTBackbone(model_name="vit_small_patch16_224.dino", pretrained=False, patch_size=16,
                        embed_dim=384, pos_resample="bilinear")


def test_release_file_in_torch_hub_cache_is_found_offline(tmp_path, monkeypatch):
    """pretrained=true with the authors' release file in $TORCH_HOME/hub/checkpoints:
    loaded from there (strictly), before the Hugging Face cache is tried."""
    from claid.models.weights import cached_weights, describe_weight_source, release_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "vit_small_patch16_224.dino"
    assert release_file(name) is None and not cached_weights(name)
    where = describe_weight_source(name)
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "dino_deitsmall16_pretrain.pth") in where
    assert "Hugging Face" in where  # both places are named
    reference, path = _release_file(tmp_path, "vit_small", 16)
    target = tmp_path / "torch" / "hub" / "checkpoints" / "dino_deitsmall16_pretrain.pth"
    target.parent.mkdir(parents=True)
    path.rename(target)
    assert release_file(name) == target and cached_weights(name)
    ours = TimmViTBackbone(model_name=name, pretrained=True, patch_size=16, embed_dim=384)
    pixels = torch.randn(1, 3, 240, 320)
    with torch.no_grad():
        cos, rel = _compare(ours(pixels), reference.get_intermediate_layers(pixels, n=1)[0][:, 1:])
    assert cos >= 0.99999 and rel <= 1e-4


def test_dino_training_checkpoint_loads(tmp_path):
    """DINO's main_dino.py checkpoint: teacher/student with module./backbone. prefixes,
    a projection head, and the argparse arguments; the teacher backbone is loaded."""
    import argparse

    reference, path = _release_file(tmp_path, "vit_small", 16)
    weights = torch.load(path, weights_only=True)
    teacher = {f"backbone.{k}": v for k, v in weights.items()}
    teacher["head.mlp.0.weight"] = torch.zeros(4, 4)
    student = {f"module.backbone.{k}": torch.zeros_like(v) for k, v in weights.items()}
    training = tmp_path / "checkpoint.pth"
    torch.save({"teacher": teacher, "student": student, "epoch": 100,
                "args": argparse.Namespace(arch="vit_small", patch_size=16)}, training)
    ours = TimmViTBackbone(model_name="vit_small_patch16_224.dino", pretrained=False, checkpoint=str(training),
                           patch_size=16, embed_dim=384)
    pixels = torch.randn(1, 3, 224, 288)
    with torch.no_grad():
        cos, rel = _compare(ours(pixels), reference.get_intermediate_layers(pixels, n=1)[0][:, 1:])
    assert cos >= 0.99999 and rel <= 1e-4


def test_backbone_with_a_rule_pickles_and_deep_copies(tmp_path):
    """Lightning's ddp_spawn pickles the model for each worker; a rule installed as a
    closure broke that (CI: "Can't pickle local object"). The copy must still compute
    the rule's tokens, bound to its own weights."""
    import copy
    import pickle

    reference, path = _release_file(tmp_path, "vit_small", 16)
    ours = TimmViTBackbone(model_name="vit_small_patch16_224.dino", pretrained=False, checkpoint=str(path),
                           patch_size=16, embed_dim=384)
    pixels = torch.randn(1, 3, 15 * 16, 20 * 16)
    with torch.no_grad():
        want = ours(pixels)
        for twin in (pickle.loads(pickle.dumps(ours)), copy.deepcopy(ours)):
            assert torch.allclose(twin(pixels), want, atol=1e-6)
            with torch.no_grad():
                for p in twin.parameters():
                    p.mul_(0.5)
            assert not torch.allclose(twin(pixels), want, atol=1e-3)  # reads its own weights
            assert torch.allclose(ours(pixels), want, atol=1e-6)


def test_weight_params_name_the_file_used_and_its_hash(tmp_path, monkeypatch):
    """With a torch hub release file present it is the one used, and the run's params
    carry its name and SHA-256; random weights say so."""
    import hashlib

    from claid.models.weight_files import weight_params

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    node = {"model_name": "vit_small_patch16_224.dino", "pretrained": True, "checkpoint": None,
            "cache_dir": str(tmp_path / "hf")}
    assert weight_params({"backbone": node})["weights.backbone.file"] == "download"
    _, path = _release_file(tmp_path, "vit_small", 16)
    target = tmp_path / "torch" / "hub" / "checkpoints" / "dino_deitsmall16_pretrain.pth"
    target.parent.mkdir(parents=True)
    path.rename(target)
    params = weight_params({"backbone": node, "descriptor": {"model_name": "resnet50", "pretrained": False}})
    assert params["weights.backbone.file"] == "dino_deitsmall16_pretrain.pth"
    assert params["weights.backbone.sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()
    assert params["weights.descriptor.file"] == "random"
