"""Re-ranking by AMES over local descriptors (``rerank=ames``).

Per query, the shortlist is the first ``num_rerank`` images of its list (the protocol's
exclusions skipped first, images without stored descriptors skipped too; a shorter list
re-ranks what it has). AMES scores the query's local descriptors against each
shortlisted image's (one batch of ``batch`` pairs at a time), and the shortlist is
re-ordered by

    lambda * s + (1 - lambda) * sigmoid(gamma * ames)

with ``s`` the search's score of the image (its best region's similarity), as the
reference fuses the global similarity; the rest of the list keeps its order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from claid.rerank.ames_model import fuse
from claid.rerank.local_features.binarise import binary_codes, unpack_codes
from claid.rerank.shortlist import reorder_head, shortlist
from claid.structures import Ranking


def _padded(arrays: list[np.ndarray], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, n_max, width) float32 zero-padded, (B, n_max) bool padding mask."""
    n_max = max(1, max(a.shape[0] for a in arrays))
    out = np.zeros((len(arrays), n_max, width), np.float32)
    pad = np.ones((len(arrays), n_max), bool)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
        pad[i, : a.shape[0]] = False
    return torch.from_numpy(out), torch.from_numpy(pad)


@torch.no_grad()
def ames_scores(model, store, query: np.ndarray, images: Sequence[str], *, batch: int = 100) -> np.ndarray:
    """(len(images),) raw AMES scores of one query's descriptors (n, D) float32 against
    the stored descriptors of ``images``."""
    device = next(model.parameters()).device
    if model.binarised:
        if store.encoding != "binary":
            raise ValueError(f"{store.directory} holds float16 descriptors; the binarised AMES model reads codes")
        projection = model.remap_local[0].W.detach().cpu().numpy()
        query_tokens = unpack_codes(binary_codes(query, projection), store.bits)
    else:
        if store.encoding != "float16":
            raise ValueError(f"{store.directory} holds binary codes; the full-precision AMES model reads float16")
        query_tokens = np.asarray(query, np.float32)
    q = torch.from_numpy(query_tokens).to(device)[None]
    q_pad = torch.zeros((1, q.shape[1]), dtype=torch.bool, device=device)
    out = np.zeros(len(images), np.float32)
    for start in range(0, len(images), batch):
        chunk = [store.get(i) for i in images[start : start + batch]]
        if model.binarised:
            arrays = [unpack_codes(c.descriptors, store.bits) for c in chunk]
        else:
            arrays = [c.descriptors.astype(np.float32) for c in chunk]
        db, db_pad = _padded(arrays, arrays[0].shape[1] if arrays[0].size else q.shape[2])
        b = db.shape[0]
        scores = model(q.expand(b, -1, -1), q_pad.expand(b, -1), db.to(device), db_pad.to(device),
                       codes=model.binarised)
        out[start : start + b] = scores.float().cpu().numpy()
    return out


def ames_rankings(model, store, query_features: Sequence[np.ndarray], rankings: Sequence[Ranking],
                  exclusions: Sequence[set[str]], settings) -> list[Ranking]:
    """Each ranking with its shortlist re-ordered by the fused AMES score.

    Args:
        model: the :class:`~claid.rerank.ames_model.Ames` model (evaluation mode).
        store: the database images' :class:`~claid.rerank.local_features.store.LocalFeatureStore`.
        query_features: per query, its (n, D) float32 local descriptors.
        settings: :class:`~claid.rerank.settings.AmesSettings`.
    """
    lam, gamma = settings.fusion
    out = []
    for q, ranking in enumerate(rankings):
        head = shortlist(ranking, exclusions[q], settings.num_rerank, store.__contains__)
        if not head or query_features[q].shape[0] == 0:
            out.append(ranking)
            continue
        raw = ames_scores(model, store, query_features[q], [ranking.images[p] for p in head],
                          batch=settings.batch)
        fused = fuse(torch.from_numpy(np.asarray(ranking.scores, np.float64)[head]),
                     torch.from_numpy(raw.astype(np.float64)), lam=lam, gamma=gamma).numpy()
        order = np.argsort(-fused, kind="stable")
        out.append(reorder_head(ranking, head, order, fused[order].astype(np.float32)))
    return out
