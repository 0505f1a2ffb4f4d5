"""The AMES model (Suma, Kordopatis-Zilos, Iscen, Tolias, ECCV 2024): a small transformer
that scores a (query, database image) pair from their local descriptors.

Architecture of github pavelsuma/ames (``src/models/matcher.py``, ``transformer_dec.py``;
the published DINOv2 models: width 128, 2 heads, 5 layers, feed-forward 1024, ReLU,
post-norm), written here with the same parameter names, so the release checkpoints'
``state`` dicts load strictly:

    tokens = [match token; remap(query descriptors); remap(database descriptors)]
    remap: full precision  LayerNorm(Linear(normalise(x)))           (D -> 128)
           binarised       LayerNorm(Linear(sign(normalise(x) @ W)))  (W: D x 128, ITQ)
    each layer: x = norm1(x + self_attn(x))    attention within each image's tokens
                x = norm2(x + cross_attn(x))   attention across the two images
                x = norm3(x + ffn(x))          (the match token attends to everything)
    score = classifier(match token)            one logit per pair

Padding positions (an image with fewer descriptors) are masked out of every attention.
In full precision the database side's remapped tokens pass through float16 and back, as
the reference does in evaluation (its descriptors are stored in float16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def block_attention(mha: nn.MultiheadAttention, x: torch.Tensor, q: int, keep: torch.Tensor,
                    cross: bool) -> torch.Tensor:
    """``mha`` over tokens ``x`` (B, 1 + q + t, E) = [match; query; database] with the
    pair masks of :func:`pair_masks`, computed block by block (the masked half of the
    full L x L attention is never formed). ``keep``: (B, L) bool, False at padding."""
    b, length, width = x.shape
    heads = mha.num_heads
    qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).view(b, length, 3, heads, width // heads)
    queries, keys, values = qkv.permute(2, 0, 3, 1, 4)  # each (B, h, L, d)
    first, second = slice(0, q + 1), torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(q + 1, length)])

    def attend(rows, cols, mask):
        return F.scaled_dot_product_attention(queries[:, :, rows], keys[:, :, cols], values[:, :, cols],
                                              attn_mask=mask[:, None, None, :])

    keep_first, keep_second = keep[:, first], keep[:, second]
    match = attend(slice(0, 1), slice(0, length), keep)
    query_rows = slice(1, q + 1)
    database_rows = slice(q + 1, length)
    if cross:  # each image attends to the other (and the match token)
        query_out = attend(query_rows, second, keep_second)
        database_out = attend(database_rows, first, keep_first)
    else:  # each image attends to itself (and the match token)
        query_out = attend(query_rows, first, keep_first)
        database_out = attend(database_rows, second, keep_second)
    out = torch.cat([match, query_out, database_out], dim=2).transpose(1, 2).reshape(b, length, width)
    return mha.out_proj(out)


class AmesLayer(nn.Module):
    """One post-norm decoder layer: self-attention, cross-attention, feed-forward
    (``nn.MultiheadAttention`` holds each attention's weights, as in the release files)."""

    def __init__(self, width: int, heads: int, feedforward: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.linear1 = nn.Linear(width, feedforward)
        self.linear2 = nn.Linear(feedforward, width)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.norm3 = nn.LayerNorm(width)

    def forward(self, x, q: int, keep):
        x = self.norm1(x + block_attention(self.self_attn, x, q, keep, cross=False))
        x = self.norm2(x + block_attention(self.cross_attn, x, q, keep, cross=True))
        return self.norm3(x + self.linear2(F.relu(self.linear1(x))))


class AmesDecoder(nn.Module):
    def __init__(self, width: int, heads: int, feedforward: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(AmesLayer(width, heads, feedforward) for _ in range(layers))


class Binarise(nn.Module):
    """``sign(normalise(x) @ W)``: the ITQ projection ``W`` (D, bits) as the release
    files hold it (``remap_local.0.W``)."""

    def __init__(self, dim: int, bits: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.zeros(dim, bits), requires_grad=False)

    def forward(self, x):
        return torch.sign(F.normalize(x, p=2, dim=-1) @ self.W)


class Ames(nn.Module):
    """AMES pair scorer.

    Args:
        local_dim: descriptor dimension D (768 for DINOv2 ViT-B/14).
        binarised: the binarised variant (``dinov2_ames_dist.pt``) or full precision
            (``dinov2_ames.pt``).
        width, heads, layers, feedforward: the published model's shape.
    """

    def __init__(self, *, local_dim: int = 768, binarised: bool = False, width: int = 128, heads: int = 2,
                 layers: int = 5, feedforward: int = 1024, bits: int = 128) -> None:
        super().__init__()
        self.binarised = binarised
        self.mtc_token = nn.Parameter(torch.zeros(width))
        if binarised:
            if bits != width:
                raise ValueError(f"the binarised model maps {bits} bits to width {width}: they must be equal")
            self.remap_local = nn.Sequential(Binarise(local_dim, bits), nn.Linear(width, width), nn.LayerNorm(width))
        else:
            self.remap_local = nn.Sequential(nn.Linear(local_dim, width), nn.LayerNorm(width))
        self.decoder = AmesDecoder(width, heads, feedforward, layers)
        self.classifier = nn.Linear(width, 1)

    def remap(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) raw descriptors -> (B, N, width) tokens."""
        return self.remap_local(F.normalize(x, p=2, dim=-1))

    def remap_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, N, bits) binary codes as +-1 (binarised model only) -> (B, N, width) tokens."""
        return self.remap_local[2](self.remap_local[1](codes))

    def forward(self, query, query_pad, database, database_pad, *, codes: bool = False):
        """Scores (B,) of B pairs.

        Args:
            query: (B, Q, D) descriptors (or (B, Q, bits) +-1 codes with ``codes``).
            query_pad: (B, Q) bool, True where a position is padding.
            database: (B, T, D) / (B, T, bits); database_pad: (B, T) bool.
        """
        if codes and not self.binarised:
            raise ValueError("binary codes need the binarised model")
        remap = self.remap_codes if codes else self.remap
        src, tgt = remap(query), remap(database)
        if not self.training and not self.binarised:
            tgt = tgt.half().float()
        b, q, _ = src.shape
        tokens = torch.cat([self.mtc_token[None, None, :].expand(b, 1, -1), src, tgt], 1)
        keep = ~torch.cat([query_pad.new_zeros((b, 1)), query_pad, database_pad], 1).bool()
        for layer in self.decoder.layers:
            tokens = layer(tokens, q, keep)
        return self.classifier(tokens[:, 0]).view(-1)


def pair_masks(q: int, t: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, L) bool masks, L = 1 + q + t, True = not attended: the self-attention keeps
    each image to itself, the cross-attention each image to the other; the match token
    (position 0) attends to and is attended by everything in both. (What
    :func:`block_attention` computes, written as the reference's full masks.)"""
    length = 1 + q + t
    within = torch.zeros((length, length), dtype=torch.bool, device=device)
    within[1 : q + 1, q + 1 :] = True
    within[q + 1 :, 1 : q + 1] = True
    across = torch.zeros((length, length), dtype=torch.bool, device=device)
    across[1 : q + 1, 1 : q + 1] = True
    across[q + 1 :, q + 1 :] = True
    return within, across


def fuse(global_scores, ames_scores, *, lam: float, gamma: float):
    """``lam * global + (1 - lam) * sigmoid(gamma * ames)`` (the reference's fusion)."""
    return lam * global_scores + (1 - lam) * (1.0 / (1.0 + torch.exp(-gamma * ames_scores)))


def random_init(model: Ames) -> None:
    """Random weights as the reference initialises a new model (seeded by the caller):
    truncated normal (std 0.02) for the match token and the linear layers, LayerNorms
    1 / 0, attention projections re-drawn, a standard normal ITQ projection."""
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            module._reset_parameters()
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    nn.init.trunc_normal_(model.mtc_token, std=0.02)
    if model.binarised:
        with torch.no_grad():
            model.remap_local[0].W.normal_()


def build_ames(*, binarised: bool, pretrained: bool, checkpoint: str | None = None, seed: int = 0,
               cache_dir: str | None = None, local_dim: int = 768) -> tuple[Ames, str]:
    """The published AMES model (``dinov2_ames.pt`` / ``dinov2_ames_dist.pt``, strictly from
    their ``state`` dict), a local file, or seeded random weights; in evaluation mode.
    Returns (model, where its weights came from)."""
    from claid.rerank.local_features.weight_file import load_weights

    model = Ames(local_dim=local_dim, binarised=binarised)
    source = load_weights(model, "ames_binarised" if binarised else "ames", checkpoint=checkpoint,
                          pretrained=pretrained, seed=seed, cache_dir=cache_dir, init=random_init)
    return model.eval(), source
