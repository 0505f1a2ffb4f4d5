"""The re-ranking methods in their running order, for the pipeline and the CLI.

    dba        -> the search runs on the DBA index (a cached index dir)
    aqe        -> the query vector is expanded and searched again
    diffusion  -> region scores from the offline part, then image scores
    superglobal -> the head of the list re-ordered (MDescAug + RerankwMDA), no offline part
    ames       -> the head of the list re-ordered by AMES over local descriptors (``local``)

The caller says how a DBA index and a diffusion offline part are obtained
(``prepare``): the pipeline builds and caches them (:mod:`claid.rerank.rerank_stage`),
``python -m claid search`` only finds them in the cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from claid.rerank.aqe import expand_queries
from claid.rerank.common import first_valid, image_numbers, rank_from_region_scores, whitened_view
from claid.rerank.diffusion import online_scores
from claid.rerank.settings import as_dict
from claid.rerank.superglobal import superglobal_rankings


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


def rerank(methods: dict, *, index, rows, query_vectors: np.ndarray, qids: Sequence[str],
           own: Sequence[set[str]], exclusions: Sequence[set[str]], rankings: list, k: int | None,
           memory_gb: float, prepare, local: LocalInputs | None = None) -> tuple[list, dict]:
    """Run ``methods`` ({name: settings}, running order) and return (rankings, notes).

    Args:
        index, rows: the searched index and its rows (:class:`~claid.rerank.common.RowSource`).
        query_vectors: (Q, D) as searched; qids: their ids.
        own: per query, the images the search itself leaves out (its own image).
        exclusions: per query, what the protocol's evaluation leaves out (feeds alpha-QE
            and diffusion's query neighbours; the ground truth's positives never do).
        rankings: the plain search's rankings.
        prepare: ``prepare(name, index, rows, settings)`` -> (index, rows, note) for
            ``dba``, (offline matrix, note) for ``diffusion``.
        local: what ``ames`` reads (:class:`LocalInputs`); required with ``ames``.
    """
    notes: dict = {}
    qw = index.transform(np.asarray(query_vectors, dtype=np.float32))
    if "dba" in methods:
        index, rows, notes["dba"] = prepare("dba", index, rows, methods["dba"])
        rankings = search_whitened(index, rows, qw, qids, own, k, memory_gb)
    if "aqe" in methods:
        s = methods["aqe"]
        qw = expand_queries(whitened_view(index), rows, qw, rankings, exclusions, n=s.n, alpha=s.alpha)
        rankings = search_whitened(index, rows, qw, qids, own, k, memory_gb)
        notes["aqe"] = {**as_dict(s), "result_vector": "best-matching region of each of the first n "
                        "images of the list the protocol evaluates (own image, query images, junk removed)"}
    if "diffusion" in methods:
        s = methods["diffusion"]
        offline, notes["diffusion"] = prepare("diffusion", index, rows, s)
        rankings = diffuse(offline, index, rows, qw, qids, own, exclusions, s)
    if "superglobal" in methods:
        s = methods["superglobal"]
        rankings = superglobal_rankings(rows, qw, rankings, exclusions, m=s.m, k=s.k, beta=s.beta)
        notes["superglobal"] = {**as_dict(s), "shortlist": "first m images of the list the protocol "
                                "evaluates (own image, query images, junk removed), each by its "
                                "best-matching region for the query (as searched last)"}
    if "ames" in methods:
        from claid.rerank.ames import ames_rankings  # torch: only when AMES runs

        s = methods["ames"]
        if local is None or len(local.query_features) != len(rankings):
            from claid.config.rules import SettingsError

            raise SettingsError("rerank=ames needs the local-descriptor store, the AMES model and each "
                                "query's local descriptors, and this caller did not provide them")
        rankings = ames_rankings(local.model, local.store, local.query_features, rankings, exclusions, s)
        lam, gamma = s.fusion
        notes["ames"] = {**as_dict(s), "lambda_used": lam, "gamma_used": gamma, "store": str(local.store.directory),
                         "bytes_per_image": round(local.store.bytes_per_image(), 1), **local.sources}
    return rankings, notes


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
