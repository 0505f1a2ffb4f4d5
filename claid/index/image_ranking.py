"""Region ranking -> image ranking.

An image scores its best region: the maximum over its regions of similarities > 0,
which is the image's first appearance in the region ranking (PROTOCOLS.md sec. 1,
item 4). The best region's box is the localisation of the query in that image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from claid.structures import Ranking


def _check_region_table(
    region_image: np.ndarray, region_boxes: np.ndarray, image_ids: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    region_image = np.asarray(region_image)
    region_boxes = np.asarray(region_boxes, dtype=np.float32)
    if region_image.ndim != 1 or not np.issubdtype(region_image.dtype, np.integer):
        raise ValueError(
            f"region_image must be a 1-D integer array, got {region_image.dtype} "
            f"{region_image.shape}"
        )
    n = region_image.shape[0]
    if region_boxes.shape != (n, 4):
        raise ValueError(f"region_boxes must be ({n}, 4), got {region_boxes.shape}")
    if n and (region_image.min() < 0 or region_image.max() >= len(image_ids)):
        raise ValueError(
            f"region_image holds indices in [{region_image.min()}, {region_image.max()}] "
            f"but there are {len(image_ids)} image ids"
        )
    return region_image.astype(np.int64), region_boxes


def _excluded_image_indices(
    exclude: Sequence[set[str]] | None, n_queries: int, image_index: dict[str, int]
) -> list[np.ndarray]:
    """Per query, the image indices to drop (ids not in the database are ignored:
    excluding an image that is not searched changes nothing)."""
    if exclude is None:
        return [np.zeros(0, dtype=np.int64)] * n_queries
    if len(exclude) != n_queries:
        raise ValueError(f"exclude has {len(exclude)} entries for {n_queries} queries")
    return [
        np.fromiter((image_index[i] for i in ex if i in image_index), dtype=np.int64)
        for ex in exclude
    ]


def _first_positions(keys: np.ndarray) -> np.ndarray:
    """The rule's one step: walking a ranking best first (``keys`` in rank order), the
    position of each key's first entry, in rank order (``return_index`` gives the first
    occurrence of each value)."""
    _, first = np.unique(keys, return_index=True)
    first.sort()
    return first


def first_appearances(sims: np.ndarray, ids: np.ndarray, region_image: np.ndarray,
                      top: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rank_images`' rule for one query over its ``k`` found regions only: O(k),
    with none of ``rank_images``' checks of the whole region table (for a caller that
    searched the table it holds, as ``claid serve`` does on every request).

    Args:
        sims: (k,) float32 similarities of the search, sorted descending (padding any).
        ids: (k,) int64 row ids into ``region_image``, -1 = padding.
        region_image: (N,) int image number of every row.
        top: images wanted.
    Returns:
        (m,) int64 rows and (m,) float64 similarities of the best regions of the first
        m <= ``top`` images, best first.
    """
    keep = (ids >= 0) & (sims > 0)
    found, found_sims = ids[keep], sims[keep]
    first = _first_positions(region_image[found])[:top]
    return found[first].astype(np.int64), found_sims[first].astype(np.float64)


def rank_images(
    sims: np.ndarray,
    ids: np.ndarray,
    region_image: np.ndarray,
    region_boxes: np.ndarray,
    image_ids: Sequence[str],
    qids: Sequence[str],
    exclude: Sequence[set[str]] | None = None,
    *,
    block: int = 4_000_000,
) -> list[Ranking]:
    """Turn per-query region rankings into image rankings.

    Per query, walk the region ranking best first and keep each image's first
    appearance with similarity > 0; its similarity is the image score and its box
    the localisation. Vectorised over queries (in blocks of about ``block`` entries).

    Args:
        sims: (Q, k) float32 region similarities, each row sorted descending
            (padding: id -1, any similarity).
        ids: (Q, k) int64 region indices into the store, -1 = no result.
        region_image: (N,) int64, image index (into ``image_ids``) of each region.
        region_boxes: (N, 4) float32 region boxes, original-image pixels.
        image_ids: the database image ids.
        qids: (Q,) query ids, copied into the rankings.
        exclude: per query, image ids removed from its ranking (e.g. the query image).
        block: about how many (query, rank) entries are processed at once.
    Returns:
        Q rankings; ``images`` best first, ``scores`` (M,) float32 > 0, ``boxes`` (M, 4).
    Raises:
        ValueError: on shape mismatches, NaN similarities, out-of-range ids or rows
            that are not sorted descending.
    """
    sims = np.asarray(sims, dtype=np.float32)
    ids = np.asarray(ids)
    region_image, region_boxes = _check_region_table(region_image, region_boxes, image_ids)
    if sims.ndim != 2 or sims.shape != ids.shape:
        raise ValueError(f"sims {sims.shape} and ids {ids.shape} must both be (Q, k)")
    n_queries, k = sims.shape
    if len(qids) != n_queries:
        raise ValueError(f"{len(qids)} qids for {n_queries} query rows")
    valid = ids >= 0
    if np.any(ids >= region_image.shape[0]):
        raise ValueError(f"region ids reach {ids.max()} but the store has {region_image.shape[0]}")
    if np.any(np.isnan(sims[valid])):
        raise ValueError("similarities contain NaN")
    # Only positive similarities count; within a row they must be sorted descending
    # for "first appearance" to mean "best region".
    keep = valid & (sims > 0)
    masked = np.where(keep, sims, -np.inf)
    if k > 1 and np.any(masked[:, 1:] > masked[:, :-1]):
        raise ValueError("each row of sims must be sorted in descending order")
    n_images = len(image_ids)
    image_index = {image_id: i for i, image_id in enumerate(image_ids)}
    excluded = _excluded_image_indices(exclude, n_queries, image_index)
    image_ids_arr = np.asarray(image_ids, dtype=object)

    rankings: list[Ranking] = []
    rows_per_block = max(1, block // max(k, 1))
    for q0 in range(0, n_queries, rows_per_block):
        q1 = min(n_queries, q0 + rows_per_block)
        rows, cols = np.nonzero(keep[q0:q1])  # row-major: within a row, rank order
        region = ids[q0:q1][rows, cols].astype(np.int64)
        key = rows.astype(np.int64) * n_images + region_image[region]
        first = _first_positions(key)  # each (query, image)'s best region, in (query, rank) order
        excluded_keys = np.concatenate(
            [r * n_images + excluded[q0 + r] for r in range(q1 - q0)] + [np.zeros(0, np.int64)]
        )
        if excluded_keys.size:
            first = first[~np.isin(key[first], excluded_keys)]
        first_rows = rows[first]
        bounds = np.searchsorted(first_rows, np.arange(q1 - q0 + 1))
        for r in range(q1 - q0):
            sel = first[bounds[r] : bounds[r + 1]]
            region_sel = region[sel]
            rankings.append(
                Ranking(
                    qid=qids[q0 + r],
                    images=image_ids_arr[region_image[region_sel]].tolist(),
                    scores=sims[q0 + r][cols[sel]].astype(np.float32),
                    boxes=region_boxes[region_sel].reshape(-1, 4),
                )
            )
    return rankings


def rank_images_dense(
    sims: np.ndarray,
    region_image: np.ndarray,
    region_boxes: np.ndarray,
    image_ids: Sequence[str],
    qids: Sequence[str],
    exclude: Sequence[set[str]] | None = None,
) -> list[Ranking]:
    """Image rankings from the similarities of every query to *every* region.

    Equal to ``rank_images`` on the fully sorted region ranking (ties aside), but
    needs no sort over regions: a per-image maximum (``np.maximum.reduceat``).

    Args:
        sims: (Q, N) float32, similarity of each query to each region.
        region_image, region_boxes, image_ids, qids, exclude: as in ``rank_images``.
    Returns:
        Q rankings, as ``rank_images``. Among an image's equally similar regions the
        lowest region index gives the box; equally scored images are ordered by
        their best region's index.
    """
    sims = np.asarray(sims, dtype=np.float32)
    region_image, region_boxes = _check_region_table(region_image, region_boxes, image_ids)
    n = region_image.shape[0]
    if sims.ndim != 2 or sims.shape[1] != n:
        raise ValueError(f"sims must be (Q, {n}), got {sims.shape}")
    if len(qids) != sims.shape[0]:
        raise ValueError(f"{len(qids)} qids for {sims.shape[0]} query rows")
    if np.any(np.isnan(sims)):
        raise ValueError("similarities contain NaN")
    image_index = {image_id: i for i, image_id in enumerate(image_ids)}
    excluded = _excluded_image_indices(exclude, sims.shape[0], image_index)
    image_ids_arr = np.asarray(image_ids, dtype=object)
    if n == 0:
        empty = np.zeros((0, 4), dtype=np.float32)
        return [Ranking(q, [], np.zeros(0, np.float32), empty) for q in qids]

    # Regions grouped by image (stable: ties keep region order), one segment per
    # image that has regions.
    if np.all(region_image[1:] >= region_image[:-1]):
        # Stores list an image's regions together: no (Q, N) gather needed.
        order, grouped = np.arange(n), sims
    else:
        order = np.argsort(region_image, kind="stable")
        grouped = sims[:, order]
    present, starts = np.unique(region_image[order], return_index=True)
    best = np.maximum.reduceat(grouped, starts, axis=1)  # (Q, images with regions)
    counts = np.diff(np.append(starts, n))
    is_best = grouped == np.repeat(best, counts, axis=1)
    position = np.where(is_best, order[None, :], n)
    best_region = np.minimum.reduceat(position, starts, axis=1)  # lowest region id at max

    rankings = []
    for q, qid in enumerate(qids):
        score, region = best[q], best_region[q]
        ok = score > 0
        if excluded[q].size:
            ok &= ~np.isin(present, excluded[q])
        score, region, image = score[ok], region[ok], present[ok]
        rank = np.lexsort((region, -score))
        rankings.append(
            Ranking(
                qid=qid,
                images=image_ids_arr[image[rank]].tolist(),
                scores=score[rank].astype(np.float32),
                boxes=region_boxes[region[rank]].reshape(-1, 4),
            )
        )
    return rankings
