"""alpha-QE (Radenovic, Tolias, Chum, TPAMI 2018), query-side, for region search.

    q' = normalise(q + sum_{i<=n} s_i^alpha x_i)

``q`` is the query vector in the index's whitened, normalised space; the results
``x_i`` are the first ``n`` images of the ranking *as the protocol evaluates it*
(the query's own image, other query images and junk removed by the protocol's own
rules: :func:`claid.rerank.common.evaluated_exclusions`; never the ground truth's
positives). For region search a result's vector is the **best-matching region of
that image**: the region of the image most similar to ``q``, from the store's exact
vectors (also for an IVF-PQ index, whose codes only ranked the images), and ``s_i``
is that similarity (clipped at 0 before the power, so a weight is never negative).
After DBA (``rerank=[dba,aqe]``) the result vectors are the DBA vectors of those regions.
``q'`` is then searched again through the same index (:func:`~claid.rerank.common.whitened_view`),
and each image's box is the region that ranks it in that second search.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice

import numpy as np

from claid.rerank.common import ImageRows, RowSource
from claid.structures import Ranking


def expand_queries(index, rows: RowSource, query_vectors: np.ndarray, rankings: Sequence[Ranking],
                   exclusions: Sequence[set[str]], *, n: int, alpha: float,
                   query_block: int = 256) -> np.ndarray:
    """(Q, D') expanded query vectors in the index's whitened space.

    Args:
        index: the RegionIndex the rankings came from.
        rows: the database rows (image of each row, whitened vectors from the store).
        query_vectors: (Q, D) query vectors as searched.
        rankings: the first search's rankings, in query order.
        exclusions: per query, images the protocol drops from what it scores.
        n: results used; alpha: the weight exponent.
    """
    qw = index.transform(np.asarray(query_vectors, dtype=np.float32))
    if len(rankings) != qw.shape[0] or len(exclusions) != qw.shape[0]:
        raise ValueError(f"{qw.shape[0]} queries, {len(rankings)} rankings, {len(exclusions)} exclusions")
    where = {image: i for i, image in enumerate(rows.image_ids)}
    grouped = ImageRows(rows.region_image, len(rows.image_ids))
    out = qw.copy()
    for start in range(0, qw.shape[0], query_block):
        stop = min(qw.shape[0], start + query_block)
        tops = []
        for q in range(start, stop):
            dropped = exclusions[q]
            kept = (where[i] for i in rankings[q].images if i not in dropped and i in where)
            tops.append(list(islice(kept, n)))
        groups = [grouped.rows_of(i) for top in tops for i in top]
        if not groups:
            continue
        vectors = rows.vectors(np.concatenate(groups))
        offset, position = 0, 0
        for q, top in zip(range(start, stop), tops):
            total = qw[q].astype(np.float64)
            for _ in top:
                size = len(groups[position])
                position += 1
                block = vectors[offset : offset + size]
                offset += size
                sims = block @ qw[q]
                best = int(np.argmax(sims))
                total += max(float(sims[best]), 0.0) ** alpha * block[best]
            out[q] = (total / np.linalg.norm(total)).astype(np.float32)
    return out
