"""DBA, database-side augmentation (Turcot & Lowe 2009, Arandjelovic & Zisserman
2012, in the weighted form of Radenovic et al. TPAMI 2018):

    x_j' = normalise(x_j + sum_{i<=n} s_ji^alpha x_i)

over the ``n`` nearest regions of ``x_j`` *other than itself*. Neighbours come from
the index's own search (approximate for IVF-PQ / HNSW), run in blocks of
``block_rows`` regions; the vectors and the weights ``s_ji = x_j . x_i`` (clipped at
0 before the power) from the store, in the index's whitened, normalised space.
Self is removed by its row number, not by its rank, so a parent and child region
with identical vectors (both at similarity 1) cannot push the region itself out of
place 0 and into its own sum. ``same_image: exclude`` (default) also drops the
regions of the region's own image (its parent, children and siblings would
otherwise fill the list and DBA would average inside each image); ``include``
keeps them.

The new vectors go into a copy of the source index *as trained*: a flat index is
refilled; an IVF-PQ or HNSW index keeps its trained coarse quantiser, PQ codebooks
and whitening and only re-encodes the new vectors (nothing is retrained, so the
codebooks were fitted on the vectors before DBA; the index's meta says so).
"""

from __future__ import annotations

import logging
import time

import faiss
import numpy as np

from claid.rerank.common import ImageRows, RowSource, first_valid, whitened_view

log = logging.getLogger(__name__)


def neighbours(view, vectors: np.ndarray, start: int, n: int, region_image: np.ndarray,
               same_image: str, extra: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` nearest rows of rows ``start..start+len(vectors)`` (self and, with
    ``exclude``, its own image's rows removed): (ids (B, n) padded -1, valid mask)."""
    k = min(view.ntotal, n + 1 + extra)
    _, ids = view.search(vectors, k)
    own = np.arange(start, start + vectors.shape[0])[:, None]
    valid = (ids >= 0) & (ids != own)
    if same_image == "exclude":
        valid &= region_image[np.maximum(ids, 0)] != region_image[own]
    return first_valid(ids, valid, n)


def augmented_vectors(index, rows: RowSource, *, n: int, alpha: float, same_image: str = "exclude",
                      block_rows: int = 4096) -> tuple[np.ndarray, dict]:
    """(N, D') float32 DBA vectors in the index's whitened space, and what was done.

    Memory: the store's vectors and the result (2 x N x D' x 4 bytes) plus one block's
    neighbour lists."""
    started = time.perf_counter()
    x = rows.all_vectors()
    view = whitened_view(index)
    region_image = rows.region_image
    extra = ImageRows(region_image, len(rows.image_ids)).max_rows if same_image == "exclude" else 0
    out = np.empty_like(x)
    short = 0
    for start in range(0, x.shape[0], block_rows):
        block = x[start : start + block_rows]
        ids, ok = neighbours(view, block, start, n, region_image, same_image, extra)
        short += int((~ok).any(axis=1).sum())
        near = x[np.maximum(ids, 0)]  # (B, n, D')
        sims = np.einsum("bd,bnd->bn", block, near)
        weights = np.where(ok, np.maximum(sims, 0.0), 0.0) ** alpha
        total = block.astype(np.float64) + np.einsum("bn,bnd->bd", weights, near)
        out[start : start + block.shape[0]] = total / np.linalg.norm(total, axis=1, keepdims=True)
    info = {"seconds": round(time.perf_counter() - started, 3), "rows_with_fewer_than_n": short,
            "neighbours_from": "the index's own search" + ("" if index.is_exact else " (approximate)")}
    return out, info


def augmented_index(index, new_vectors: np.ndarray, settings: dict):
    """A RegionIndex like ``index`` (same whitening, same trained FAISS index) holding
    ``new_vectors`` (already in its whitened space) instead of its own."""
    from claid.index import RegionIndex

    if index.is_exact:
        inner = faiss.IndexFlatIP(index.dim)
    else:
        inner = faiss.clone_index(index.faiss_index)
        inner.reset()  # keeps the training: quantiser, codebooks
    inner.add(np.ascontiguousarray(new_vectors, dtype=np.float32))
    note = ("flat index refilled with the DBA vectors" if index.is_exact else
            f"{index.meta['factory']}: the new vectors re-encoded with the source index's trained "
            "quantiser and codebooks (not retrained: they were fitted before DBA)")
    meta = {**index.meta, "dba": {**settings, "note": note}}
    out = RegionIndex(inner, index.whitening, meta)
    return out
