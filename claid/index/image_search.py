"""Query vectors -> ranked database images, through the region index.

One query vector per query (image + box for instance search, whole image for image
retrieval); the regions it retrieves are turned into an image ranking where an image
scores its best region and that region's box localises the query.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from claid.index.exact_search import rank_images_exhaustive
from claid.index.image_ranking import rank_images
from claid.index.region_index import RegionIndex
from claid.structures import Ranking


def search_images(
    index: RegionIndex,
    queries: np.ndarray,
    region_image: np.ndarray,
    region_boxes: np.ndarray,
    image_ids: Sequence[str],
    qids: Sequence[str],
    *,
    k: int | None = 1000,
    exclude: Sequence[set[str]] | None = None,
    query_block: int = 1024,
    memory_gb: float = 1.0,
) -> list[Ranking]:
    """Rank database images for each query vector.

    Args:
        index: the region index (region id = row of ``region_image``).
        queries: (Q, D) query vectors.
        region_image: (N,) int64 image index of each indexed region.
        region_boxes: (N, 4) float32 region boxes, original-image pixels.
        image_ids: database image ids (``region_image`` indexes this list).
        qids: (Q,) query ids.
        k: regions retrieved per query; None = every region with similarity > 0
            (exhaustive, for mAP-all; exact indexes only, computed as a per-image
            maximum without sorting the regions, the database read once per block of
            queries that fits ``memory_gb``: :mod:`claid.index.exact_search`).
        exclude: per query, image ids to drop (e.g. the query's own image).
        query_block: queries searched at a time with k set (memory: block x k entries).
        memory_gb: working memory of the exhaustive search (k None), GiB.
    Returns:
        Q rankings: images best first with score (best region similarity > 0) and box.
    """
    queries = np.asarray(queries)
    if queries.ndim != 2:
        raise ValueError(f"queries must be (Q, D), got shape {queries.shape}")
    n_regions = np.asarray(region_image).shape[0]
    if n_regions != index.ntotal:
        raise ValueError(f"index holds {index.ntotal} regions, region_image lists {n_regions}")
    if len(qids) != queries.shape[0]:
        raise ValueError(f"{len(qids)} qids for {queries.shape[0]} queries")
    if exclude is not None and len(exclude) != queries.shape[0]:
        raise ValueError(f"exclude has {len(exclude)} entries for {queries.shape[0]} queries")
    if k is None:  # transforms (and so validates) every query once, up front
        return rank_images_exhaustive(
            index.database_vectors(), index.transform(queries), region_image, region_boxes,
            image_ids, qids, exclude, memory_gb=memory_gb)
    # Validate every query up front, so a NaN in the last block fails before work is done.
    index.transform(queries)
    rankings: list[Ranking] = []
    for start in range(0, queries.shape[0], query_block):
        stop = min(queries.shape[0], start + query_block)
        sims, ids = index.search(queries[start:stop], k)
        rankings += rank_images(
            sims,
            ids,
            region_image,
            region_boxes,
            image_ids,
            qids[start:stop],
            None if exclude is None else exclude[start:stop],
        )
    return rankings
