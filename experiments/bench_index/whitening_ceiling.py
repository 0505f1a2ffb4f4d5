"""How much of raw exact search's top-100 an index can keep once the vectors are
PCA-whitened (the lab's transform) or only PCA-reduced, on bench_index's generated
vectors: exact search and IVF-PQ after each transform, against exact search on the
raw vectors and against exact search after the same transform.

    OPENBLAS_NUM_THREADS=1 python experiments/bench_index/whitening_ceiling.py

Small on purpose (80k vectors from 256 clusters, 200 queries; a few minutes): it
bounds what any whitened preset can reach against the raw `flat` preset.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import faiss
import numpy as np
from faiss.contrib.evaluation import knn_intersection_measure

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import RegionVectorGenerator  # noqa: E402

from claid.index.whitening import fit_pca_whitening  # noqa: E402


def reduce(vectors: np.ndarray, mean: np.ndarray, proj: np.ndarray) -> np.ndarray:
    """(x - mean) @ proj, then unit rows (the L2 after the whitening)."""
    reduced = (vectors - mean) @ proj
    return reduced / np.linalg.norm(reduced, axis=1, keepdims=True)


def top_k(factory: str, database: np.ndarray, queries: np.ndarray, train: int, k: int,
          nprobe: int) -> np.ndarray:
    index = faiss.index_factory(database.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    index.train(database[:train])
    index.add(database)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = nprobe
    return index.search(queries, k)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=80_000, help="database vectors")
    parser.add_argument("--clusters", type=int, default=256)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dim", type=int, default=256, help="PCA output dimension")
    parser.add_argument("--train", type=int, default=50_000, help="vectors the PCA and FAISS fit on")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--factory", default="IVF64,PQ128x7")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)

    generator = RegionVectorGenerator(2048, n_clusters=args.clusters)
    database = np.concatenate([generator.block(b, 10_000) for b in range(-(-args.n // 10_000))])[: args.n]
    queries = generator.block(-1, args.queries)
    raw = top_k("Flat", database, queries, args.train, args.k, args.nprobe)

    white = fit_pca_whitening(database[: args.train], dim=args.dim)
    unwhitened = white["proj"] * np.sqrt(white["eigvals"] + 1e-9).astype(np.float32)
    print(f"n={args.n} clusters={args.clusters} queries={args.queries} k={args.k} "
          f"PCA to {args.dim}, {args.factory} nprobe={args.nprobe}")
    print("| transform | index | inter@k vs raw exact | inter@k vs exact after the transform |")
    print("|---|---|---|---|")
    for name, proj in (("L2 -> PCA-whiten -> L2", white["proj"]), ("L2 -> PCA -> L2", unwhitened)):
        db, q = reduce(database, white["mean"], proj), reduce(queries, white["mean"], proj)
        own = top_k("Flat", db, q, args.train, args.k, args.nprobe)
        for factory in ("Flat", args.factory):
            ids = own if factory == "Flat" else top_k(factory, db, q, args.train, args.k, args.nprobe)
            print(f"| {name} | {factory} | {knn_intersection_measure(ids, raw):.3f} | "
                  f"{knn_intersection_measure(ids, own):.3f} |")


if __name__ == "__main__":
    main()
