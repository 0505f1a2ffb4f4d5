"""What the re-ranking methods share: the state they pass along (:class:`RerankState`),
the search again on whitened query vectors, the diffusion's online part, AMES's inputs.
The methods themselves and the runner are :mod:`claid.rerank.methods`.

The caller says how a DBA index and a diffusion offline part are obtained
(``prepare``): the pipeline builds and caches them (:mod:`claid.rerank.rerank_stage`),
``python -m claid search`` only finds them in the cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from claid.rerank.common import first_valid, image_numbers, rank_from_region_scores, whitened_view
from claid.rerank.diffusion import online_scores


def search_whitened(index, rows, qw: np.ndarray, qids: Sequence[str], own: Sequence[set[str]],
                    k: int | None, memory_gb: float):
    """claid's search (an image scores its best region) of whitened query vectors."""
    from claid.index import search_images

    return search_images(whitened_view(index), qw, rows.region_image, rows.boxes, rows.image_ids,
                         list(qids), k=k, exclude=list(own), memory_gb=memory_gb)


def seed_regions(view, qw: np.ndarray, kq: int, region_image: np.ndarray,
                 excluded: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each query's ``kq`` nearest regions outside its excluded images: (ids, valid),
    (Q, kq). The search widens until ``kq`` are found or nothing is left."""
    q = qw.shape[0]
    out_ids = np.full((q, kq), -1, np.int64)
    todo = np.arange(q)
    k = min(view.ntotal, kq + 64)
    while todo.size and k:
        _, ids = view.search(qw[todo], k)
        valid = ids >= 0
        for row, query in enumerate(todo):
            if excluded[query].size:
                valid[row] &= ~np.isin(region_image[np.maximum(ids[row], 0)], excluded[query])
        picked, ok = first_valid(ids, valid, kq)
        out_ids[todo] = picked
        short = ok.sum(axis=1) < kq
        if k >= view.ntotal:
            break
        todo, k = todo[short], min(view.ntotal, k * 4)
    return out_ids, out_ids >= 0


@dataclass
class LocalInputs:
    """What ``rerank=ames`` reads: the AMES model, the database images' local-descriptor
    store, and each query's local descriptors ((n, D) float32, in query order)."""

    model: object
    store: object
    query_features: Sequence[np.ndarray]
    sources: dict = field(default_factory=dict)


@dataclass
class RerankState:
    """What a re-ranking step reads and changes (:class:`claid.interfaces.Reranker`).

    Attributes:
        index, rows: the searched index and its rows (:class:`~claid.rerank.common.RowSource`);
            DBA replaces both.
        qw: (Q, D) float32 query vectors, whitened as the index whitens (alpha-QE expands them).
        qids: the queries' ids; own: per query, the images the search itself leaves out.
        exclusions: per query, what the protocol's evaluation leaves out.
        rankings: the current rankings, one per query, best first.
        k, memory_gb: the search's ``index.k`` and working memory (a step that searches again).
        prepare: ``prepare(name, index, rows, settings)``: a DBA index / diffusion offline part.
        local: what ``ames`` reads (:class:`LocalInputs`).
        notes: method -> what it did (``settings.rerank.methods_run`` of the run report).
    """

    index: object
    rows: object
    qw: np.ndarray
    qids: Sequence[str]
    own: Sequence[set[str]]
    exclusions: Sequence[set[str]]
    rankings: list
    k: int | None
    memory_gb: float
    prepare: object = None
    local: LocalInputs | None = None
    notes: dict = field(default_factory=dict)


def diffuse(offline, index, rows, qw: np.ndarray, qids: Sequence[str], own: Sequence[set[str]],
            exclusions: Sequence[set[str]], s, query_block: int = 256) -> list:
    """Online diffusion: ``max(s, 0)^gamma @ offline[kq ids]``, then image rankings."""
    view = whitened_view(index)
    excluded = image_numbers(rows.image_ids, exclusions)
    own_numbers = image_numbers(rows.image_ids, own)
    out = []
    for start in range(0, qw.shape[0], query_block):
        stop = min(qw.shape[0], start + query_block)
        ids, ok = seed_regions(view, qw[start:stop], s.kq, rows.region_image, excluded[start:stop])
        near = rows.vectors(np.maximum(ids, 0).ravel()).reshape(ids.shape[0], ids.shape[1], -1)
        sims = np.einsum("qd,qkd->qk", qw[start:stop], near)
        scores = online_scores(offline, sims, np.maximum(ids, 0), ok, s.gamma)
        for row in range(stop - start):
            lo, hi = scores.indptr[row], scores.indptr[row + 1]
            out.append(rank_from_region_scores(
                (scores.indices[lo:hi], scores.data[lo:hi]), rows.region_image, rows.boxes,
                rows.image_ids, qids[start + row], own_numbers[start + row], s.aggregate))
    return out
