"""Exhaustive search: the older per-block loop against the memory-bounded blocks, on the same data in one run.

Before: similarity blocks of 16M entries (``block // ntotal`` queries per block, the
database read once per block) ranked with ``rank_images_dense``. After:
``rank_images_exhaustive`` (query blocks from ``--memory-gb``, the database read
once per block). Both give the same rankings up to the last bit of the similarities
(the script counts identical rankings and the largest score difference at equal
rank) and prints both times and their ratio.

    python experiments/bench_scale/bench_exact_search.py --regions 540000 --queries 1250
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from claid.index.exact_search import rank_images_exhaustive
from claid.index.image_ranking import rank_images_dense


def before(database, queries, region_image, boxes, image_ids, qids, block=16_000_000):
    """The older loop (region_index.iter_similarities + rank_images_dense)."""
    rows = max(1, block // max(database.shape[0], 1))
    rankings = []
    for start in range(0, queries.shape[0], rows):
        sims = queries[start : start + rows] @ database.T
        rankings += rank_images_dense(sims, region_image, boxes, image_ids, qids[start : start + rows])
    return rankings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, default=200_000)
    parser.add_argument("--per-image", type=int, default=20)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--memory-gb", type=float, default=1.0)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    database = rng.standard_normal((args.regions, args.dim), dtype=np.float32)
    database /= np.linalg.norm(database, axis=1, keepdims=True)
    queries = database[rng.choice(args.regions, args.queries, replace=False)] + 0.01
    region_image = np.arange(args.regions) // args.per_image
    image_ids = [f"{i}" for i in range(int(region_image[-1]) + 1)]
    boxes = rng.random((args.regions, 4), dtype=np.float32)
    qids = [f"q{i}" for i in range(args.queries)]
    t0 = time.perf_counter()
    old = before(database, queries, region_image, boxes, image_ids, qids)
    t1 = time.perf_counter()
    new = rank_images_exhaustive(database, queries, region_image, boxes, image_ids, qids,
                                 memory_gb=args.memory_gb)
    t2 = time.perf_counter()
    # the two matrix products group the sums differently, so scores may differ in the
    # last bit and swap two images whose scores are that close: count those swaps
    same = sum(a.images == b.images for a, b in zip(old, new))
    same_sets = all(set(a.images) == set(b.images) for a, b in zip(old, new))
    score_gap = max(float(np.max(np.abs(a.scores - b.scores))) for a, b in zip(old, new))
    print(f"{args.regions:,} regions x {args.dim}, {args.queries} queries: before {t1 - t0:.1f} s "
          f"({(t1 - t0) / args.queries * 1000:.1f} ms/query), after {t2 - t1:.1f} s "
          f"({(t2 - t1) / args.queries * 1000:.1f} ms/query), ratio {(t1 - t0) / (t2 - t1):.2f}, "
          f"identical rankings: {same}/{len(old)}, same images ranked: {same_sets}, "
          f"largest score difference at equal rank: {score_gap:.1e}")


if __name__ == "__main__":
    main()
