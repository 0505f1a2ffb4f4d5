"""Resampling a ViT's learned position table to an input's patch grid, by each
official code base's own rule.

Every region starts from the backbone's patch tokens, and the cutter thresholds
their affinities, so the tokens must be the ones the published model code computes.
The table of a model trained at 224 px holds ``M x M`` positions (plus one for the
CLS token); an input of ``rows x cols`` patches needs ``rows x cols``. Four rules
are in use, and they differ in the weights and the sampling positions of the
bicubic kernel:

- ``dino`` (facebookresearch/dino ``VisionTransformer.interpolate_pos_encoding``):
  plain bicubic with ``scale_factor = ((rows + 0.1) / M, (cols + 0.1) / M)``, no
  antialiasing. Skipped (table used as is) only when the input has exactly the
  table's patch count **and** is square in pixels.
- ``dinov2`` (facebookresearch/dinov2 hub models without registers): the same rule
  (``interpolate_offset = 0.1``, ``interpolate_antialias = False``), in float32.
- ``dinov2_reg`` (DINOv2's ``*_reg`` hub models): ``size = (rows, cols)``
  (``interpolate_offset = 0``) with ``antialias = True``.
- ``transformers`` (Hugging Face ``SiglipVisionEmbeddings.interpolate_pos_encoding``):
  ``size = (rows, cols)``, bicubic, ``align_corners = False``, no antialiasing;
  skipped when the grid equals the table's.
- ``timm``: timm's ``resample_abs_pos_embed`` (antialiased bicubic to the new size),
  what claid used before this rule was made a setting.

PyTorch's antialiased bicubic uses other kernel weights even when upsampling, and
the ``+ 0.1`` offset samples at slightly other positions, so the rules give tokens
that differ by a relative 2-5 % on real photos (experiments/bench_detector, "Position-table rule").
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

#: The rules, and the official one of each model family (``default_rule``).
RULES = ("dino", "dinov2", "dinov2_reg", "transformers", "timm")


def default_rule(model_name: str) -> str:
    """The official resampling rule of a timm model name: DINO -> ``dino``, DINOv2
    -> ``dinov2`` (``dinov2_reg`` for register models), SigLIP -> ``transformers``
    (its checkpoints are published for transformers), anything else ``timm``."""
    name = model_name.lower()
    if "dinov2" in name:
        return "dinov2_reg" if "_reg" in name else "dinov2"
    if name.endswith(".dino") or "_dino" in name.split(".")[0]:
        return "dino"
    if "siglip" in name:
        return "transformers"
    return "timm"


def check_rule(rule: str) -> str:
    """``rule`` itself when it is one of :data:`RULES`; else ValueError naming them."""
    if rule not in RULES:
        raise ValueError(f"pos_resample must be one of {', '.join(RULES)}, got {rule!r}")
    return rule


def resample_patch_table(
    table: torch.Tensor,
    rows: int,
    cols: int,
    *,
    rule: str,
    square_input: bool,
) -> torch.Tensor:
    """The patch part of a position table resampled to a ``rows x cols`` grid.

    Args:
        table: (1, M*M, C) patch positions (no CLS entry), row-major over an M x M grid.
        rows, cols: the input's patch grid.
        rule: one of :data:`RULES` (not ``timm``, which ``timm`` itself applies).
        square_input: whether the input image is square in pixels (DINO's and
            DINOv2's skip condition compares pixel sides, not patch counts).
    Returns:
        (1, rows*cols, C) in ``table``'s dtype.
    """
    check_rule(rule)
    n, dim = table.shape[1], table.shape[2]
    side = int(math.sqrt(n))
    if side * side != n:
        raise ValueError(f"position table of {n} patches is not square")
    if rule in ("dino", "dinov2", "dinov2_reg"):
        if rows * cols == n and square_input:
            return table
        grid = table.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
        if rule == "dinov2_reg":  # interpolate_offset 0: size=, antialiased
            out = F.interpolate(grid, size=(rows, cols), mode="bicubic", antialias=True)
        else:
            out = F.interpolate(grid, scale_factor=((rows + 0.1) / side, (cols + 0.1) / side), mode="bicubic")
    elif rule == "transformers":
        if (rows, cols) == (side, side):
            return table
        grid = table.reshape(1, side, side, dim).permute(0, 3, 1, 2)
        out = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)
    else:
        raise ValueError("rule 'timm' is applied by timm itself")
    if out.shape[-2:] != (rows, cols):
        raise RuntimeError(f"{rule} resampling gave a {tuple(out.shape[-2:])} grid, wanted {(rows, cols)}")
    return out.permute(0, 2, 3, 1).reshape(1, rows * cols, dim).to(table.dtype)


def install_rule(model: torch.nn.Module, rule: str) -> None:
    """Make a timm ``VisionTransformer`` (built with ``dynamic_img_size=True``) add
    its position embedding by ``rule``, for every later forward (every layer and
    facet reads the tokens this produces). ``timm`` leaves the model as built."""
    check_rule(rule)
    if rule == "timm":
        return
    if getattr(model, "pos_embed", None) is None:
        raise ValueError(f"pos_resample={rule!r} needs a learned position table; the model has none")
    if not getattr(model, "dynamic_img_size", False):
        raise ValueError("pos_resample needs a model built with dynamic_img_size=True")
    table_prefix = 0 if model.no_embed_class else int(model.num_prefix_tokens)
    if model.pos_embed.shape[1] - table_prefix <= 0:
        raise ValueError("the position table holds no patch positions")

    # a partial of a module-level function, not a closure: the model must still
    # pickle (Lightning's ddp_spawn sends it to each worker) and deep-copy
    model._pos_embed = functools.partial(_rule_pos_embed, model, rule, table_prefix)


def _rule_pos_embed(model: torch.nn.Module, rule: str, table_prefix: int,
                    x: torch.Tensor) -> torch.Tensor:
    """timm's ``_pos_embed`` for a (batch, rows, cols, dim) patch grid, by ``rule``."""
    batch, rows, cols, dim = x.shape
    # inputs are cropped to whole patches, so square pixels <=> rows == cols
    patches = resample_patch_table(model.pos_embed[:, table_prefix:], rows, cols, rule=rule,
                                   square_input=rows == cols)
    x = x.reshape(batch, rows * cols, dim)
    prefix_tokens = []
    if model.cls_token is not None:
        prefix_tokens.append(model.cls_token.expand(batch, -1, -1))
    if model.reg_token is not None:
        prefix_tokens.append(model.reg_token.expand(batch, -1, -1))
    if model.no_embed_class:  # table without prefix positions: add, then prepend
        x = torch.cat(prefix_tokens + [x + patches], dim=1)
    else:  # table with a CLS position (DINO, DINOv2): prepend, then add
        positions = torch.cat([model.pos_embed[:, :table_prefix], patches], dim=1)
        x = torch.cat(prefix_tokens + [x], dim=1) + positions
    return model.pos_drop(x)
