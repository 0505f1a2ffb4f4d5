"""SuperGlobal re-ranking (Shao et al., ICCV 2023), training-free, from global vectors.

Reference: github ShihaoShao-GH/SuperGlobal (commit 8694696), ``modules/reranking/
MDescAug.py`` and ``RerankwMDA.py``. Per query, over the first ``m`` images of its
ranking (the images the protocol leaves out removed first, as for alpha-QE; a shorter
list re-ranks what it has), each image represented by its **best-matching region**
for the query (the region of that image most similar to the query, from the store's
vectors in the index's whitened space, as :mod:`claid.rerank.aqe` gathers them):

1. MDescAug: each shortlisted vector ``x_i`` is replaced by the weighted mean of its
   ``k + 1`` nearest shortlisted vectors (itself included, by similarity rank): weight
   1 for the first, ``beta * s_ij`` for the others,
   ``x_i' = sum_j w_ij x_j / sum_j w_ij`` (not re-normalised, as the reference).
2. The shortlist is ordered by ``q . x_i'``.
3. RerankwMDA: ``d = max over the first k + 1 of that order of x'`` (element-wise), and
   the final score of each ``(q . x_i' + d . x_i') / 2``; the shortlist is re-ordered
   by it.

The images after the shortlist keep their order and scores; a re-ordered image keeps
its box and takes its final score (a different scale from the search's similarity).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

from claid.rerank.common import ImageRows, RowSource
from claid.rerank.shortlist import reorder_head, shortlist
from claid.structures import Ranking


def mdescaug(shortlist: np.ndarray, query: np.ndarray, *, k: int, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """MDescAug of one query: (augmented vectors (M, D), ``q . x'`` (M,)), float64
    (the shortlist's scores lie close together: float32 rounding would swap neighbours).

    Args:
        shortlist: (M, D) the shortlisted vectors, in ranking order.
        query: (D,) the query vector.
        k: neighbours besides the item itself; beta: their weight factor.
    """
    shortlist = np.asarray(shortlist, np.float64)
    m = shortlist.shape[0]
    width = min(k + 1, m)
    sims = shortlist @ shortlist.T  # (M, M)
    if width < m:
        near = np.argpartition(-sims, width - 1, axis=1)[:, :width]
        order = np.argsort(-np.take_along_axis(sims, near, axis=1), axis=1, kind="stable")
        near = np.take_along_axis(near, order, axis=1)
    else:
        near = np.argsort(-sims, axis=1, kind="stable")
    weights = np.take_along_axis(sims, near, axis=1) * beta
    weights[:, 0] = 1.0
    mixing = sparse.csr_matrix((weights.ravel(), near.ravel(), np.arange(0, m * width + 1, width)), shape=(m, m))
    augmented = (mixing @ shortlist) / weights.sum(axis=1, keepdims=True)
    return augmented, augmented @ np.asarray(query, np.float64)


def rerank_with_mda(augmented: np.ndarray, query_scores: np.ndarray, *, k: int) -> tuple[np.ndarray, np.ndarray]:
    """RerankwMDA of one query: (positions in the shortlist, best first (M,); their
    final scores (M,) float32)."""
    first = np.argsort(-query_scores, kind="stable")  # MDescAug's order
    top = augmented[first[: k + 1]].max(axis=0)
    final = (query_scores[first] + augmented[first] @ top) / 2.0
    order = np.argsort(-final, kind="stable")
    return first[order], final[order].astype(np.float32)


def best_region_vectors(rows: RowSource, grouped: ImageRows, query: np.ndarray,
                        images: Sequence[int]) -> np.ndarray:
    """(len(images), D) float32: for each image number, its region most similar to
    ``query`` (whitened vectors from ``rows``; lowest row among equals)."""
    groups = [grouped.rows_of(i) for i in images]
    if not groups:
        return np.zeros((0, query.shape[0]), np.float32)
    sizes = np.array([len(g) for g in groups])
    vectors = rows.vectors(np.concatenate(groups))
    sims = vectors @ query
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    top = np.repeat(np.maximum.reduceat(sims, starts), sizes)
    place = np.where(sims == top, np.arange(sims.size), sims.size)
    best = np.minimum.reduceat(place, starts)  # first row reaching its image's maximum
    return vectors[best]


def superglobal_rankings(rows: RowSource, qw: np.ndarray, rankings: Sequence[Ranking],
                         exclusions: Sequence[set[str]], *, m: int, k: int, beta: float) -> list[Ranking]:
    """Each ranking with its first ``m`` images (outside ``exclusions``) re-ordered by
    SuperGlobal; the excluded images of that head follow it, then the rest, unchanged.

    Args:
        rows: the database rows; qw: (Q, D) query vectors in the index's whitened space.
    """
    where = {image: i for i, image in enumerate(rows.image_ids)}
    grouped = ImageRows(rows.region_image, len(rows.image_ids))
    out = []
    for q, ranking in enumerate(rankings):
        head = shortlist(ranking, exclusions[q], m, where.__contains__)
        if len(head) < 2:
            out.append(ranking)
            continue
        vectors = best_region_vectors(rows, grouped, qw[q], [where[ranking.images[p]] for p in head])
        augmented, query_scores = mdescaug(vectors, qw[q], k=k, beta=beta)
        order, final = rerank_with_mda(augmented, query_scores, k=k)
        out.append(reorder_head(ranking, head, order, final))
    return out
