"""Index benchmark: build time, memory, query latency and recall@k of the index presets
against exact search, on generated region vectors (see README.md).

    python experiments/bench_index/bench_index.py                 # 1M x 2048, a few minutes
    python experiments/bench_index/bench_index.py --n 100000      # quick run

The vectors are streamed in blocks from a seeded generator, so the 8 GB of raw
1M x 2048 float32 never sit in memory: each block is whitened-reduced and added by
``RegionIndex.add``, exactly as a large region store would be indexed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from faiss.contrib.evaluation import knn_intersection_measure
from omegaconf import OmegaConf

from claid.index import RegionIndex, save_whitening

PRESET_DIR = Path(__file__).resolve().parents[2] / "conf" / "index"


class RegionVectorGenerator:
    """Seeded stand-in for a region store: unit vectors from a mixture of clusters
    with a shared low-rank spread plus isotropic noise, so neighbours exist and PCA
    has structure to keep. Block ``i`` is always the same vectors."""

    def __init__(self, dim: int, *, n_clusters: int = 4096, rank: int = 64, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.dim, self.seed = dim, seed
        self.centres = rng.standard_normal((n_clusters, dim), dtype=np.float32)
        self.spread = rng.standard_normal((rank, dim), dtype=np.float32) * 0.15

    def block(self, index: int, size: int) -> np.ndarray:
        """(size, dim) float32 unit rows of block ``index`` (negative: query blocks)."""
        rng = np.random.default_rng([self.seed, index + 1_000_000])
        cluster = rng.integers(len(self.centres), size=size)
        latent = rng.standard_normal((size, self.spread.shape[0]), dtype=np.float32)
        noise = rng.standard_normal((size, self.dim), dtype=np.float32) * 0.6
        vectors = self.centres[cluster] + latent @ self.spread + noise
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def blocks(n: int, block_size: int):
    for number, start in enumerate(range(0, n, block_size)):
        yield number, min(block_size, n - start)


def load_preset(name: str) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(PRESET_DIR / f"{name}.yaml"))
    cfg.pop("k")
    # _target_ / _partial_ say which function builds it (claid.index.build_index)
    return {key: value for key, value in cfg.items() if not key.startswith("_")}


def time_queries(index: RegionIndex, queries: np.ndarray, k: int, n_single: int) -> dict:
    """Batched throughput (all queries at once) and single-query latency."""
    started = time.perf_counter()
    sims, ids = index.search(queries, k)
    batched = time.perf_counter() - started
    single = []
    for row in range(min(n_single, len(queries))):
        started = time.perf_counter()
        index.search(queries[row : row + 1], k)
        single.append(time.perf_counter() - started)
    return {
        "ids": ids,
        "batch_ms_per_query": 1000 * batched / len(queries),
        "single_ms_median": 1000 * float(np.median(single)),
    }


def recall(ids: np.ndarray, reference: np.ndarray, k: int) -> dict:
    return {
        f"inter@{k}": float(knn_intersection_measure(ids[:, :k], reference[:, :k])),
        f"1-R@{k}": float(np.mean(np.any(ids[:, :k] == reference[:, :1], axis=1))),
        "1-R@1": float(np.mean(ids[:, 0] == reference[:, 0])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="database regions")
    parser.add_argument("--dim", type=int, default=2048, help="raw descriptor dimension")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--preset", default="ivfpq", help="approximate preset in conf/index/")
    parser.add_argument(
        "--sweep",
        type=int,
        nargs="*",
        default=[1, 4, 16, 64],
        help="values of the preset's search parameter (nprobe for IVF, ef_search for HNSW)",
    )
    parser.add_argument("--single", type=int, default=100, help="queries timed one by one")
    parser.add_argument("--block", type=int, default=50_000, help="regions generated at once")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="FAISS OpenMP threads; 1 on a shared machine, where spin-waiting threads "
        "slow FAISS k-means down up to 40x",
    )
    parser.add_argument(
        "--reference",
        choices=("whitened", "raw"),
        default="whitened",
        help="exact reference: Flat over the preset's whitened vectors (the index's own "
        "approximation error) or the `flat` preset over the raw D-dim vectors (the whole "
        "preset against the default exact search; 1M x 2048 needs 8.2 GB)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)

    cfg = load_preset(args.preset)
    generator = RegionVectorGenerator(args.dim, seed=args.seed)
    queries = generator.block(-1, args.queries)
    train_size = cfg["train_size"] or args.n
    training = np.concatenate(
        [generator.block(b, size) for b, size in blocks(min(train_size, args.n), args.block)]
    )  # the stream is i.i.d., so its head is a uniform sample of the database

    # Approximate preset: whitening fitted on the training sample, FAISS trained on it.
    started = time.perf_counter()
    approx = RegionIndex.train(training, **cfg)
    approx_train_s = time.perf_counter() - started
    del training

    # Exact reference over the *same* reduced vectors: a flat index with the preset's
    # whitening (1M x 2048 raw would be 8 GB), loaded from file as the lab does.
    started = time.perf_counter()
    if args.reference == "raw" or approx.whitening is None:
        exact = RegionIndex.train(np.zeros((0, args.dim), np.float32), factory="Flat")
        exact_label = f"Flat (exact, `flat` preset), raw {args.dim}-D"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = save_whitening(Path(tmp) / "whitening.npz", approx.whitening)
            exact = RegionIndex.train(
                np.zeros((0, args.dim), np.float32), whitening="file", whitening_file=path
            )
        exact_label = f"Flat (exact), whitened to {exact.dim}"
    exact_train_s = time.perf_counter() - started

    add_s = {"exact": 0.0, "approx": 0.0}
    generate_s = 0.0
    for b, size in blocks(args.n, args.block):
        started = time.perf_counter()
        vectors = generator.block(b, size)
        generate_s += time.perf_counter() - started
        for name, index in (("exact", exact), ("approx", approx)):
            started = time.perf_counter()
            index.add(vectors)
            add_s[name] += time.perf_counter() - started

    k = args.k
    exact_q = time_queries(exact, queries, k, args.single)
    rows = [
        {
            "index": exact_label,
            "build_s": exact_train_s + add_s["exact"],
            "train_s": exact_train_s,
            "memory_MB": exact.nbytes() / 1e6,
            **{key: v for key, v in exact_q.items() if key != "ids"},
            **recall(exact_q["ids"], exact_q["ids"], k),
        }
    ]
    approx_nbytes = approx.nbytes()
    knob = "nprobe" if cfg.get("nprobe") is not None else "ef_search"
    label = f"{approx.meta['factory']}, whitened to {approx.dim}"
    sweep = args.sweep
    if approx.meta["fallback"]:
        # Too few vectors for the preset (quick runs): say so, nothing to sweep.
        label += f" (fallback: {approx.meta['fallback']['reason']})"
        sweep = [None]
    for value in sweep:
        if value is not None:
            approx.set_search_params(**{knob: value})
        approx_q = time_queries(approx, queries, k, args.single)
        rows.append(
            {
                "index": label if value is None else f"{label}, {knob}={value}",
                "build_s": approx_train_s + add_s["approx"],
                "train_s": approx_train_s,
                "memory_MB": approx_nbytes / 1e6,
                **{key: v for key, v in approx_q.items() if key != "ids"},
                **recall(approx_q["ids"], exact_q["ids"], k),
            }
        )

    record = {
        "settings": {**vars(args), "out": str(args.out), "preset": {args.preset: cfg}},
        "machine": {
            "faiss_threads": args.threads,
            "env": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
            "load_average_at_end": os.getloadavg(),
            "platform": platform.platform(),
            "faiss": faiss.__version__,
        },
        "generate_s": generate_s,
        "peak_rss_GB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "approx_meta": approx.describe(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "_rawref" if args.reference == "raw" else ""
    out = args.out / f"bench_n{args.n}_d{args.dim}_{args.preset}{suffix}.json"
    out.write_text(json.dumps(record, indent=2))

    metrics = [f"inter@{k}", f"1-R@{k}", "1-R@1"]
    print(f"n={args.n} dim={args.dim} queries={args.queries} k={k} threads={args.threads}")
    print(
        "| index | build s (train s) | memory MB | batch ms/query | single ms | "
        + " | ".join(metrics)
        + " |"
    )
    print("|---|---|---|---|---|" + "---|" * len(metrics))
    for row in rows:
        print(
            f"| {row['index']} | {row['build_s']:.1f} ({row['train_s']:.1f}) | "
            f"{row['memory_MB']:.0f} | {row['batch_ms_per_query']:.3f} | "
            f"{row['single_ms_median']:.2f} | "
            + " | ".join(f"{row[m]:.3f}" for m in metrics)
            + " |"
        )
    print(f"peak RSS {record['peak_rss_GB']:.2f} GB; data generation {generate_s:.1f} s; -> {out}")


if __name__ == "__main__":
    main()
