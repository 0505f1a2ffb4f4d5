"""ViT detector backbones through timm: DINO, DINOv2, SigLIP, supervised ViT.

One class covers every ``conf/backbone/*.yaml``; a YAML names the timm model and
its preprocessing. Output is one layer's patch tokens with the prefix tokens
(CLS, registers) dropped, as ``(B, H*W, D)`` row-major over the patch grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from claid.backbones.base import Backbone
from claid.backbones.pos_embed import check_rule, default_rule, install_rule
from claid.models.preprocessing import GRID_FITS, RESAMPLING, prepare_for_grid, reference_size
from claid.models.weights import build_timm_model

FACETS = ("tokens", "keys", "queries", "values")


class TimmViTBackbone(Backbone):
    """A timm Vision Transformer as a CLAID detector backbone (inference only).

    Args:
        model_name: timm name and pretrained tag, e.g. ``vit_base_patch8_224.dino``.
        pretrained: load the published weights through timm's cache.
        checkpoint: local weight file; wins over ``pretrained``.
        seed: seed of the random weights when ``pretrained`` is false.
        cache_dir: overrides timm's download cache (None: library default).
        patch_size: expected patch size in pixels (checked against the model).
        embed_dim: expected token dimension (checked against the model).
        layer: block whose output is taken; negative counts from the end
            (-1: last block, the paper's choice).
        facet: ``tokens`` (block output) or ``keys`` / ``queries`` / ``values``
            (that block's attention projections, all heads concatenated; the
            keys are what LOST/TokenCut use).
        final_norm: apply the model's final LayerNorm to ``tokens`` (DINO's
            ``get_intermediate_layers`` and the reference code do).
        short_side, max_long_side, native_below: resize policy, see
            ``claid.models.preprocessing.reference_size``.
        grid_fit: ``crop`` (top-left crop to the patch grid, CLAID's reference) or
            ``pad`` (zeros at the bottom / right up to it, TokenCut's).
        square_size: resize every image to this square, whatever its aspect
            (MaskCut: 480), instead of the resize policy; None: the policy.
        resample: PIL filter of the resize: ``bilinear``, ``lanczos`` (MaskCut), ``bicubic``.
        mean, std: per-channel normalisation of [0, 1] RGB.
        pos_resample: how the position table is resampled to each input's grid
            (``claid.backbones.pos_embed``): ``dino``, ``dinov2``, ``dinov2_reg``,
            ``transformers`` or ``timm``; None: the model's official rule.
        gelu: ``tanh`` runs every GELU of the model with the tanh approximation, as
            SigLIP was trained (big_vision; transformers' ``gelu_pytorch_tanh``),
            where timm builds exact (erf) GELUs; ``erf`` or None leaves timm's.
    """

    def __init__(
        self,
        *,
        model_name: str,
        pretrained: bool,
        checkpoint: str | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
        patch_size: int,
        embed_dim: int,
        layer: int = -1,
        facet: str = "tokens",
        final_norm: bool = True,
        short_side: int | None = 360,
        max_long_side: int | None = 800,
        native_below: int = 356,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        pos_resample: str | None = None,
        gelu: str | None = None,
        grid_fit: str = "crop",
        square_size: int | None = None,
        resample: str = "bilinear",
    ) -> None:
        super().__init__()
        if grid_fit not in GRID_FITS or resample not in RESAMPLING:
            raise ValueError(f"grid_fit must be one of {GRID_FITS}, resample one of {sorted(RESAMPLING)}; "
                             f"got {grid_fit!r}, {resample!r}")
        if square_size is not None and (not isinstance(square_size, int) or square_size < patch_size):
            raise ValueError(f"square_size must be null or an integer >= the patch size, got {square_size!r}")
        self.grid_fit, self.square_size, self.resample = grid_fit, square_size, resample
        if facet not in FACETS:
            raise ValueError(f"facet must be one of {FACETS}, got {facet!r}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean/std need 3 values, std > 0; got {list(mean)}, {list(std)}")
        self.model_name = model_name
        self.pos_resample = check_rule(pos_resample) if pos_resample else default_rule(model_name)
        # num_classes=0 drops the classifier; dynamic_img_size lets any multiple of the
        # patch size in, its position table resampled by pos_resample (install_rule below).
        self.model = build_timm_model(
            model_name,
            pretrained=pretrained,
            checkpoint=checkpoint,
            seed=seed,
            cache_dir=cache_dir,
            num_classes=0,
            dynamic_img_size=True,
        )
        install_rule(self.model, self.pos_resample)  # the official code's tokens, every layer and facet
        if gelu not in (None, "erf", "tanh"):
            raise ValueError(f"gelu must be erf or tanh, got {gelu!r}")
        if gelu == "tanh":  # blocks and the attention-pool head alike
            for module in self.model.modules():
                if isinstance(module, torch.nn.GELU):
                    module.approximate = "tanh"
        self.gelu = gelu or "erf"
        model_patch = self.model.patch_embed.patch_size
        model_patch = model_patch[0] if isinstance(model_patch, Sequence) else int(model_patch)
        if model_patch != patch_size:
            raise ValueError(f"{model_name} has patch size {model_patch}, config says {patch_size}")
        if self.model.embed_dim != embed_dim:
            raise ValueError(
                f"{model_name} has embed dim {self.model.embed_dim}, config says {embed_dim}"
            )
        depth = len(self.model.blocks)
        if not -depth <= layer < depth:
            raise ValueError(f"layer {layer} out of range for {model_name} ({depth} blocks)")
        if facet != "tokens" and not hasattr(self.model.blocks[layer].attn, "qkv"):
            raise ValueError(f"facet {facet!r} needs a fused qkv projection, {model_name} has none")
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.block_index = layer % depth
        self.facet = facet
        self.final_norm = final_norm
        self.num_prefix_tokens = int(self.model.num_prefix_tokens)
        self.short_side = short_side
        self.max_long_side = max_long_side
        self.native_below = native_below
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.eval()

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) pixels an image of (height, width) is resized to before the crop to
        the patch grid (what ``load_image(long_side_needed=...)`` decodes for)."""
        if self.square_size is not None:
            return self.square_size, self.square_size
        return reference_size(height, width, short_side=self.short_side,
                              max_long_side=self.max_long_side, native_below=self.native_below)

    def preprocess(self, image: Image.Image) -> tuple[torch.Tensor, tuple[float, float]]:
        """RGB image -> ((3, h, w) normalised input, h and w multiples of the patch
        size; (sy, sx) original pixels per input pixel)."""
        return prepare_for_grid(
            image,
            patch_size=self.patch_size,
            short_side=self.short_side,
            max_long_side=self.max_long_side,
            native_below=self.native_below,
            mean=self.mean,
            std=self.std,
            fit=self.grid_fit,
            square=self.square_size,
            resample=self.resample,
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) -> (B, (h/P)*(w/P), D) patch tokens, prefix tokens dropped."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected (B, 3, h, w) pixels, got {tuple(pixels.shape)}")
        h, w = pixels.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"input {h}x{w} is not a multiple of patch size {self.patch_size}")
        if self.facet == "tokens":
            (tokens,) = self.model.forward_intermediates(
                pixels,
                indices=[self.block_index],
                norm=self.final_norm,
                stop_early=True,
                output_fmt="NLC",
                intermediates_only=True,
            )
            return tokens
        return self._attention_facet(pixels)

    def _attention_facet(self, pixels: torch.Tensor) -> torch.Tensor:
        """Queries / keys / values of the chosen block, read off its qkv projection
        (timm lays it out as [q | k | v], heads contiguous inside each)."""
        captured: list[torch.Tensor] = []
        qkv = self.model.blocks[self.block_index].attn.qkv
        handle = qkv.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            self.model.forward_intermediates(
                pixels, indices=[self.block_index], stop_early=True, intermediates_only=True
            )
        finally:
            handle.remove()
        part = {"queries": 0, "keys": 1, "values": 2}[self.facet]
        d = self.embed_dim
        return captured[0][:, self.num_prefix_tokens :, part * d : (part + 1) * d]
