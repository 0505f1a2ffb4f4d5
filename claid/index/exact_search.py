"""Exhaustive (exact) search of a flat index, bounded by a memory budget.

Every query is compared with every region, for mAP over all images (``k = None``).
The cost is the matrix product, and on a CPU that product is limited by how often
the database is read: so queries are taken in blocks as large as the memory budget
allows (``search.memory_gb``) and, for each block, the database is read once, in
chunks of a few thousand rows, while a running per-image maximum is kept::

    for each block of B queries                     B from the memory budget
        best (B, n_images) = -inf, best_region = -1
        for each chunk of C consecutive rows        chunks end where an image ends
            sims (B, C) = queries @ chunk.T
            per run of rows of one image: max and first argmax
            best[:, image] = max(best, run max)      strictly greater: the lowest
                                                     region index wins a tie
        image ranking per query from best (> 0, excluded images dropped)

Memory: B x n_images x 12 bytes for the running maxima plus B x C x ~16 bytes for a
chunk's similarities and their reductions, and one C x D float32 buffer the chunk is
copied into (the database may be a memory-mapped index file, which BLAS reads much
more slowly than anonymous memory); time: one pass over the database per query block
(instead of one per ~29 queries with a fixed block of 16M similarities). Blocks are
made equal (1,250 queries in two passes: 625 + 625, not 1,179 + 71).
The result equals :func:`claid.index.image_ranking.rank_images_dense` on the full
similarity matrix, ties included.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from claid.index.image_ranking import _check_region_table, _excluded_image_indices
from claid.structures import Ranking

#: Rows of the database compared with a query block at a time.
CHUNK_ROWS = 8192
#: Bytes per (query, row) entry of a chunk: similarity, repeated maximum, mask, position.
CHUNK_ENTRY_BYTES = 16
#: Bytes per (query, image) entry of the running maxima: float32 score + int64 region
#: (int32 below 2**31 regions: the budget is then an upper bound).
IMAGE_ENTRY_BYTES = 12


def query_block_size(n_images: int, chunk_rows: int, memory_gb: float) -> int:
    """Queries per block so that the block's working memory stays within ``memory_gb``
    GiB (at least one query)."""
    if not memory_gb > 0:
        raise ValueError(f"search.memory_gb must be > 0, got {memory_gb}")
    per_query = n_images * IMAGE_ENTRY_BYTES + chunk_rows * CHUNK_ENTRY_BYTES
    return max(1, int(memory_gb * 2**30 // max(per_query, 1)))


def _chunk_plan(region_image: np.ndarray, chunk_rows: int) -> list[tuple]:
    """Per chunk of consecutive rows: (first row, last row + 1, run starts (local),
    run images, run length or 0, sequences of runs with strictly increasing image).

    A run is a maximal stretch of rows of one image. Chunks end at run starts, so a
    chunk holds whole images (unless one image alone exceeds ``chunk_rows``)."""
    n = region_image.shape[0]
    run_starts = np.flatnonzero(np.diff(region_image) != 0) + 1
    run_starts = np.concatenate([[0], run_starts]).astype(np.int64)
    targets = np.arange(chunk_rows, n, chunk_rows)
    aligned = run_starts[np.searchsorted(run_starts, targets, side="right") - 1]
    bounds = np.unique(np.concatenate([[0], aligned, [n]]))
    plan = []
    for c0, c1 in zip(bounds[:-1], bounds[1:]):
        images = region_image[c0:c1]
        starts = np.concatenate([[0], np.flatnonzero(np.diff(images) != 0) + 1]).astype(np.int64)
        run_image = images[starts]
        lengths = np.diff(np.append(starts, c1 - c0))
        regular = int(lengths[0]) if np.all(lengths == lengths[0]) else 0
        # images repeat within a chunk only when the table is not grouped by image
        # (e.g. whole-image rows appended after the regions): split there
        descents = np.flatnonzero(np.diff(run_image) <= 0) + 1
        edges = np.concatenate([[0], descents, [len(starts)]])
        plan.append((int(c0), int(c1), starts, run_image, regular, list(zip(edges[:-1], edges[1:]))))
    return plan


def _run_maxima(sims: np.ndarray, starts: np.ndarray, regular: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, runs) maximum of each run and (B, runs) local row of its first maximum."""
    if regular:
        runs = sims.reshape(sims.shape[0], -1, regular)
        first = np.argmax(runs, axis=2)
        best = np.take_along_axis(runs, first[:, :, None], axis=2)[:, :, 0]
        return best, first + starts[None, :]
    best = np.maximum.reduceat(sims, starts, axis=1)
    lengths = np.diff(np.append(starts, sims.shape[1]))
    is_best = sims == np.repeat(best, lengths, axis=1)
    columns = np.arange(sims.shape[1], dtype=np.int32)
    position = np.where(is_best, columns[None, :], np.int32(sims.shape[1]))
    return best, np.minimum.reduceat(position, starts, axis=1)


def rank_images_exhaustive(
    database: np.ndarray,
    queries: np.ndarray,
    region_image: np.ndarray,
    region_boxes: np.ndarray,
    image_ids: Sequence[str],
    qids: Sequence[str],
    exclude: Sequence[set[str]] | None = None,
    *,
    memory_gb: float = 1.0,
    chunk_rows: int = CHUNK_ROWS,
) -> list[Ranking]:
    """Image rankings from the similarity of every query to every region.

    Args:
        database: (N, D') float32 indexed (transformed) region vectors, e.g. a view
            of a flat index's storage (read once per query block).
        queries: (Q, D') float32 transformed query vectors.
        region_image: (N,) int image index of each row; rows of one image need not
            be contiguous.
        region_boxes: (N, 4) float32 boxes, original pixels.
        image_ids, qids, exclude: as in :func:`claid.index.rank_images`.
        memory_gb: working memory of one query block, GiB.
        chunk_rows: database rows compared at a time.
    Returns:
        Q rankings: every image whose best region has similarity > 0, best first
        (ties: lowest best-region index first), with that region's box.
    """
    region_image, region_boxes = _check_region_table(region_image, region_boxes, image_ids)
    n, n_images = region_image.shape[0], len(image_ids)
    if database.shape[0] != n:
        raise ValueError(f"database has {database.shape[0]} rows, region_image {n}")
    if len(qids) != queries.shape[0]:
        raise ValueError(f"{len(qids)} qids for {queries.shape[0]} query rows")
    image_index = {image_id: i for i, image_id in enumerate(image_ids)}
    excluded = _excluded_image_indices(exclude, queries.shape[0], image_index)
    image_ids_arr = np.asarray(image_ids, dtype=object)
    plan = _chunk_plan(region_image, max(1, int(chunk_rows)))
    block = query_block_size(n_images, max(1, int(chunk_rows)), memory_gb)
    passes = max(1, -(-queries.shape[0] // block))
    block = max(1, -(-queries.shape[0] // passes))  # equal blocks, same number of passes
    region_dtype = np.int32 if n < 2**31 else np.int64  # halves the running argmax
    rankings: list[Ranking] = []
    widest = max((c1 - c0 for c0, c1, *_ in plan), default=0)
    buffer = np.empty((widest, database.shape[1]), dtype=np.float32)
    for q0 in range(0, queries.shape[0], block):
        query_block = np.ascontiguousarray(queries[q0 : q0 + block], dtype=np.float32)
        best = np.full((query_block.shape[0], n_images), -np.inf, dtype=np.float32)
        best_region = np.full((query_block.shape[0], n_images), -1, dtype=region_dtype)
        for c0, c1, starts, run_image, regular, sequences in plan:
            # copied into one reused buffer first: BLAS reading a memory-mapped index
            # directly took 34.6 s instead of 19.7 s at 540k x 2048 (page-cache pages)
            rows = buffer[: c1 - c0]
            np.copyto(rows, database[c0:c1])
            sims = query_block @ rows.T  # finite: both sides were checked
            run_best, run_first = _run_maxima(sims, starts, regular)
            for s0, s1 in sequences:
                images = run_image[s0:s1]
                current = best[:, images]
                better = run_best[:, s0:s1] > current
                best[:, images] = np.where(better, run_best[:, s0:s1], current)
                best_region[:, images] = np.where(better, run_first[:, s0:s1] + c0,
                                                  best_region[:, images])
        for r in range(query_block.shape[0]):
            keep = best[r] > 0
            keep[excluded[q0 + r]] = False
            image = np.flatnonzero(keep)
            score, region = best[r, image], best_region[r, image]
            order = np.lexsort((region, -score))
            rankings.append(Ranking(
                qid=qids[q0 + r],
                images=image_ids_arr[image[order]].tolist(),
                scores=score[order].astype(np.float32),
                boxes=region_boxes[region[order]].reshape(-1, 4),
            ))
    return rankings


def search_all_regions(database: np.ndarray, queries: np.ndarray, *,
                       memory_gb: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Every region ranked for every query: (Q, N) float32 similarities descending and
    (Q, N) int64 region ids. The output itself is Q x N x 12 bytes; ``memory_gb``
    bounds the working memory of the sort (query blocks)."""
    n = database.shape[0]
    sims = np.zeros((queries.shape[0], n), dtype=np.float32)
    ids = np.zeros((queries.shape[0], n), dtype=np.int64)
    rows = max(1, int(memory_gb * 2**30 // max(n * 16, 1)))
    for start in range(0, queries.shape[0], rows):
        block = queries[start : start + rows] @ database.T
        order = np.argsort(-block, axis=1, kind="stable")
        ids[start : start + rows] = order
        sims[start : start + rows] = np.take_along_axis(block, order, axis=1)
    return sims, ids
