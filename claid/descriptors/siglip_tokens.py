"""Region vectors in SigLIP's joint image-text space, for text-to-instance search.

A region's vector is SigLIP's own image embedding restricted to the region: the
detector's (final-norm) SigLIP tokens under the region's mask go through the
image tower's attention-pool head (the "MAP" head, whose output *is* SigLIP's
image embedding; SigLIP has no further projection). ``encode_text`` embeds
texts with SigLIP's text tower (transformers), so regions and texts compare by
cosine similarity.

The image side reuses the detector backbone (``conf/backbone/siglip_vitb16``,
timm), whose model carries the attention-pool head; the text tower and its
tokenizer come from transformers (``google/siglip-base-patch16-224`` holds the
same published B/16 weights as timm's ``vit_base_patch16_siglip_224.webli``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from claid.backbones.base import Backbone
from claid.descriptors.pooling import boxes_to_cells, cell_keep_masks, l2_normalise
from claid.descriptors.vit_tokens import ViTTokenDescriptor
from claid.models.weights import WeightsUnavailableError, hub_cache_only_when_offline
from claid.structures import PatchGrid


def _hub_cache(cache_dir: str | None) -> str:
    from huggingface_hub import constants

    return str(cache_dir or constants.HF_HUB_CACHE)


def _missing(what: str, name: str, cache_dir: str | None, error: Exception) -> str:
    return (
        f"{what} {name!r} is unavailable ({type(error).__name__}: {str(error)[:200]}).\n"
        f"  Source: Hugging Face hub repo https://huggingface.co/{name}, expected in the "
        f"hub cache at {_hub_cache(cache_dir)} (set HF_HOME or HF_HUB_CACHE, or cache_dir).\n"
        f"  Fix: download it on a machine with network access and copy the cache, or "
        f"point text_model / tokenizer at a local folder saved with save_pretrained()."
    )


def _fetching(name: str):
    """A hub download guard for a hub name; nothing for a local folder (no network)."""
    if os.path.isdir(os.path.expanduser(name)):
        return nullcontext()
    return hub_cache_only_when_offline()


def build_text_tower(
    text_model: str, *, pretrained: bool, seed: int, cache_dir: str | None
) -> torch.nn.Module:
    """SigLIP's text tower: published weights from ``text_model`` (hub name or
    local folder), or seeded random weights with the base configuration."""
    from transformers import SiglipTextConfig, SiglipTextModel

    if pretrained:
        try:
            with _fetching(text_model):
                model = SiglipTextModel.from_pretrained(text_model, cache_dir=cache_dir)
        except OSError as error:  # transformers' "not found / cannot connect"
            raise WeightsUnavailableError(
                _missing("SigLIP text tower", text_model, cache_dir, error)
            ) from error
    else:
        # SigLIP B/16's text tower; token ids 1 (pad/eos) as in the released tokenizer
        config = SiglipTextConfig(pad_token_id=1, eos_token_id=1, bos_token_id=None)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = SiglipTextModel(config)
    model.eval()
    model.requires_grad_(False)
    return model


class SigLIPTokenDescriptor(ViTTokenDescriptor):
    """Region tokens -> SigLIP attention-pool head -> joint image-text space.

    Args:
        backbone, pretrained, checkpoint, query: as ``ViTTokenDescriptor``; the
            backbone must be a timm SigLIP ViT (it has the attention-pool head).
        dim: embedding size (backbone embed dim = text hidden size; checked).
        text_model: transformers name or local folder of SigLIP (text tower used).
        tokenizer: transformers name or local folder of the tokenizer; None = ``text_model``.
            Loaded on first ``encode_text`` (its files are only needed for text).
        text_pretrained: load the published text weights (else seeded random).
        seed: seed of random text weights.
        cache_dir: Hugging Face cache override (None: default).
        mask_pooling: pool the tokens under the region's mask (else its box).
        max_text_length: token length texts are padded / cut to (SigLIP: 64).
    """

    # the attention-pool head lives in the backbone: pooling needs the network
    poolable_without_network = False

    def __init__(
        self,
        *,
        backbone: Backbone | Mapping | None,
        pretrained: bool,
        checkpoint: str | None = None,
        dim: int,
        text_model: str = "google/siglip-base-patch16-224",
        tokenizer: str | None = None,
        text_pretrained: bool | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
        mask_pooling: bool = True,
        query: str = "crop",
        max_text_length: int = 64,
    ) -> None:
        super().__init__(
            backbone=backbone,
            pretrained=pretrained,
            checkpoint=checkpoint,
            dim=dim,
            pooling="mean",  # unused: the attention-pool head replaces it
            normalize_tokens=False,  # the head expects raw final-norm tokens
            mask_pooling=mask_pooling,
            query=query,
        )
        if self.backbone is None:
            raise ValueError("siglip_tokens needs the SigLIP backbone (its attention-pool head)")
        head = getattr(getattr(self.backbone, "model", None), "attn_pool", None)
        if head is None:
            raise ValueError(
                "siglip_tokens needs a backbone with an attention-pool head "
                "(conf/backbone/siglip_vitb16); this backbone has none"
            )
        if getattr(head, "latent_len", 1) != 1 or getattr(head, "pos_embed", None) is not None:
            raise ValueError("siglip_tokens needs an attention-pool head with one latent query "
                             "and no position embedding (SigLIP's MAP head)")
        if getattr(self.backbone, "facet", "tokens") != "tokens" or not getattr(
            self.backbone, "final_norm", True
        ):
            raise ValueError("siglip_tokens needs final-norm tokens (facet: tokens, final_norm)")
        self.text_tower = build_text_tower(
            text_model,
            pretrained=pretrained if text_pretrained is None else text_pretrained,
            seed=seed,
            cache_dir=cache_dir,
        )
        if self.text_tower.config.hidden_size != dim:
            raise ValueError(
                f"text tower width {self.text_tower.config.hidden_size} != image dim {dim}"
            )
        self.text_model = text_model
        self.tokenizer_name = tokenizer or text_model
        self.cache_dir = cache_dir
        self.max_text_length = max_text_length
        self._tokenizer: Any = None
        self.eval()

    def attention_pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, D) final-norm tokens of one region -> (D,) SigLIP image embedding."""
        head = self.backbone.model.attn_pool
        param = next(head.parameters())
        return head(tokens.to(param.device, param.dtype)[None])[0]

    def attention_pool_regions(self, tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """All regions of one image through the attention-pool head at once.

        Args:
            tokens: (N, D) final-norm tokens of the whole image.
            keep: (R, N) bool, the tokens each region pools (each row non-empty).
        Returns:
            (R, D): row r equals ``attention_pool(tokens[keep[r]])``. The head's one
            latent query attends to every token with the other tokens masked out;
            keys and values are computed once for the image, not once per region
            (timm's ``AttentionPoolLatent`` with R queries sharing them).
        """
        head = self.backbone.model.attn_pool
        param = next(head.parameters())
        x = tokens.to(param.device, param.dtype)[None]  # (1, N, D)
        count, n = keep.shape
        _, _, width = x.shape
        q = head.q(head.latent).reshape(1, head.num_heads, 1, head.head_dim)
        kv = head.kv(x).reshape(1, n, 2, head.num_heads, head.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)  # (1, H, N, d) each
        q, k = head.q_norm(q), head.k_norm(k)
        bias = torch.zeros(keep.shape, dtype=q.dtype, device=q.device)
        bias = bias.masked_fill(~keep.to(q.device), float("-inf"))[None, None]  # (1, 1, R, N)
        pooled = torch.nn.functional.scaled_dot_product_attention(
            q.expand(1, head.num_heads, count, head.head_dim), k, v, attn_mask=bias)
        pooled = head.proj_drop(head.proj(pooled.transpose(1, 2).reshape(count, width)))
        if head.mlp is not None:
            pooled = pooled + head.mlp(head.norm(pooled))
        return pooled

    def pool(
        self,
        feature_map: torch.Tensor | None,
        boxes: np.ndarray,
        scale: tuple[float, float],
        masks: np.ndarray | None = None,
        patch_grid: PatchGrid | None = None,
        mask_cell_px: tuple[float, float] | None = None,
    ) -> np.ndarray:
        """Each region's tokens (under its mask, else its box) through the
        attention-pool head -> (R, dim) float32, L2-normalised."""
        if patch_grid is None:
            raise ValueError("siglip_tokens pools the detector's tokens: pass patch_grid")
        if patch_grid.tokens.shape[1] != self.dim:
            raise ValueError(f"patch_grid tokens have dim {patch_grid.tokens.shape[1]}")
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        h, w = patch_grid.grid
        cells = boxes_to_cells(boxes, patch_grid.scale, patch_grid.patch_size, (h, w))
        use_masks = self.mask_pooling and masks is not None
        if use_masks:
            masks = np.asarray(masks, dtype=bool)
            if masks.shape != (len(boxes), h, w):
                raise ValueError(f"masks shape {masks.shape} != ({len(boxes)}, {h}, {w})")
        if not len(boxes):
            return np.zeros((0, self.dim), dtype=np.float32)
        tokens = torch.from_numpy(np.asarray(patch_grid.tokens, dtype=np.float32))
        keep = cell_keep_masks(cells, (h, w), masks if use_masks else None)
        with torch.no_grad():
            return l2_normalise(self.attention_pool_regions(tokens, keep))

    @torch.no_grad()
    def encode_token_ids(self, input_ids: torch.Tensor) -> np.ndarray:
        """(N, L) int64 token ids -> (N, dim) float32 L2-normalised text embeddings."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (N, L), got {tuple(input_ids.shape)}")
        param = next(self.text_tower.parameters())
        pooled = self.text_tower(input_ids=input_ids.to(param.device)).pooler_output
        return l2_normalise(pooled)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (N, dim) float32 L2-normalised, comparable with region vectors.

        Texts are padded to ``max_text_length`` tokens, as SigLIP was trained."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("encode_text takes a list of strings")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_text_length,
            return_tensors="pt",
        )
        return self.encode_token_ids(batch["input_ids"])

    @property
    def tokenizer(self) -> Any:
        """The SigLIP tokenizer, loaded on first use."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            name = os.path.expanduser(self.tokenizer_name)
            try:
                with _fetching(name):
                    self._tokenizer = AutoTokenizer.from_pretrained(name, cache_dir=self.cache_dir)
            except ImportError as error:
                # the released SigLIP tokenizer is a SentencePiece model
                raise ImportError(
                    f"the SigLIP tokenizer {name!r} needs the sentencepiece package "
                    f"(pip install sentencepiece): {error}"
                ) from error
            except OSError as error:
                raise WeightsUnavailableError(
                    _missing("SigLIP tokenizer", name, self.cache_dir, error)
                ) from error
        return self._tokenizer
