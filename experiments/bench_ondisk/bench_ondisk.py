"""On-disk IVF index benchmark: trained once, built in parts, merged on disk, searched mapped.

Generated region vectors with a planted neighbour structure (D=768: groups of
near-duplicates around latent centres, an anisotropic spectrum so that the
PCA-whitening matters), indexed with ``conf/index/ivfpq_ondisk.yaml`` through the
functions the preset calls (``train_parts``, ``build_part`` per part, ``merge_parts``,
``RegionIndex.save``/``load``). Prints, per step, the wall time and the peak anonymous
memory (RssAnon, sampled every 5 ms from /proc by a child process), the bytes per
region on disk, recall@100 against exact search on the same whitened vectors, and the
search latency of one query at k=1000: the first queries after opening the index
(its lists file evicted from the page cache first) and the p50 once warm.

    python experiments/bench_ondisk/bench_ondisk.py --regions 1000000 --parts 4

See README.md here for the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BLOCK = 65536  # rows generated together (generation is seeded per block)

_SAMPLER = """
import sys, time
pid, out = sys.argv[1], sys.argv[2]
with open(out, "w") as log:
    while True:
        try:
            status = open(f"/proc/{pid}/status").read()
        except (FileNotFoundError, ProcessLookupError):
            break
        anon = next(l for l in status.splitlines() if l.startswith("RssAnon")).split()[1]
        log.write(f"{time.time()} {anon}\\n")
        log.flush()
        time.sleep(0.005)
"""


class GeneratedTable:
    """``n_rows`` unit vectors of length ``dim``, generated block by block (seeded):
    row r belongs to a random group ``g`` of about ``group_size`` rows and is
    ``normalise(scale * (centre[g] + spread * z))`` with a per-dimension ``scale``
    falling from 1 to 0.05 (an anisotropic spectrum, so that the PCA-whitening
    matters); the rows of a group are each other's nearest neighbours. The group
    centres are held in memory (groups x dim float32)."""

    def __init__(self, n_rows: int, dim: int = 768, *, group_size: int = 100,
                 spread: float = 0.35, seed: int = 0) -> None:
        self.n_rows, self.dim, self.seed, self.spread = int(n_rows), int(dim), seed, spread
        self.stored_dtype = np.dtype(np.float32)
        rng = np.random.default_rng(seed)
        self.groups = max(1, self.n_rows // group_size)
        self.scale = np.geomspace(1.0, 0.05, dim).astype(np.float32)
        self.centres = rng.standard_normal((self.groups, dim), dtype=np.float32)

    def block(self, number: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, number))
        rows = min(BLOCK, self.n_rows - number * BLOCK)
        vectors = rng.standard_normal((rows, self.dim), dtype=np.float32)
        vectors *= self.spread
        vectors += self.centres[rng.integers(self.groups, size=rows)]
        vectors *= self.scale
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def gather(self, rows: np.ndarray, dtype=np.float32) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((rows.size, self.dim), dtype=dtype)
        blocks = rows // BLOCK
        for number in np.unique(blocks):
            where = np.flatnonzero(blocks == number)
            out[where] = self.block(int(number))[rows[where] - number * BLOCK]
        return out

    def vector_chunks(self, rows: int = BLOCK):
        for number in range((self.n_rows + BLOCK - 1) // BLOCK):
            yield number * BLOCK, self.block(number)


def queries_near(table: GeneratedTable, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, vectors): ``count`` database rows with noise added (their group is
    their neighbourhood)."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(table.n_rows, size=count, replace=False))
    noise = rng.standard_normal((count, table.dim), dtype=np.float32)
    vectors = table.gather(rows) + 0.05 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    return rows, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def exact_top(index, table: GeneratedTable, queries: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) ids of exact inner-product search on the index's whitened vectors."""
    q = index.transform(queries)
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.zeros((len(q), k), np.int64)
    for start, chunk in table.vector_chunks():
        sims = q @ index.transform(chunk).T
        s = np.concatenate([best_s, sims], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + chunk.shape[0]), sims.shape)], axis=1)
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    return best_i


def run(args) -> dict:
    import faiss
    from omegaconf import OmegaConf

    from claid.index import RegionIndex
    from claid.index.index_dir import LISTS_FILE
    from claid.index.ondisk_build import build_part, merge_parts, train_parts

    faiss.omp_set_num_threads(args.threads)
    work = Path(args.workdir) / f"n{args.regions}-p{args.parts}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    node = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "index" / "ivfpq_ondisk.yaml"))
    for key in ("_target_", "_partial_", "k", "parts", "work_dir", "keep_parts", "add_block"):
        node.pop(key)
    table = GeneratedTable(args.regions, args.dim, seed=args.seed)

    samples = work / "rss.txt"
    sampler = subprocess.Popen([sys.executable, "-c", _SAMPLER, str(os.getpid()), str(samples)])
    time.sleep(0.3)
    steps = {}

    def step(name, fn):
        t0 = time.time()
        value = fn()
        steps[name] = {"seconds": round(time.time() - t0, 2), "span": (t0, time.time())}
        print(f"{name}: {steps[name]['seconds']:.1f} s", flush=True)
        return value

    step("train", lambda: train_parts(table, work / "parts", args.parts, seed=args.seed, **node))
    for part in range(args.parts):
        step(f"part {part}", lambda part=part: build_part(table, work / "parts", part))
    index = step("merge", lambda: merge_parts(work / "parts"))
    step("save", lambda: index.save(work / "index"))
    lists = work / "index" / LISTS_FILE
    index = None
    rows, queries = queries_near(table, args.queries, args.seed + 1)
    # the first queries after opening: the lists file evicted from the page cache
    # (this file's pages only; posix_fadvise DONTNEED drops clean pages)
    fd = os.open(lists, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    loaded = step("open", lambda: RegionIndex.load(work / "index", mmap=True))
    first_ms = []
    for q in queries[: args.first]:
        t0 = time.perf_counter()
        loaded.search(q[None], 1000)
        first_ms.append(round((time.perf_counter() - t0) * 1e3, 1))
    warm_ms = []
    for q in queries:
        t0 = time.perf_counter()
        loaded.search(q[None], 1000)
        warm_ms.append((time.perf_counter() - t0) * 1e3)
    steps["search"] = {"seconds": round(sum(warm_ms) / 1e3, 2), "span": (time.time() - sum(warm_ms) / 1e3, time.time())}
    found = loaded.search(queries, 100)[1]
    truth = step("exact", lambda: exact_top(loaded, table, queries, 100))
    recall = float(np.mean([len(set(a) & set(b)) / 100 for a, b in zip(found, truth)]))
    sampler.terminate()
    sampler.wait()
    trace = np.loadtxt(samples, ndmin=2)
    for value in steps.values():
        t0, t1 = value.pop("span")
        inside = trace[(trace[:, 0] >= t0 - 0.01) & (trace[:, 0] <= t1 + 0.01), 1]
        value["peak_rss_anon_mib"] = round(float(inside.max()) / 1024, 1) if inside.size else None
    ivf = faiss.extract_index_ivf(loaded.faiss_index)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "regions": args.regions, "dim": args.dim, "parts": args.parts, "queries": args.queries,
        "factory": loaded.meta["factory"], "whitening_dim": loaded.dim, "nprobe": int(ivf.nprobe),
        "faiss_threads": args.threads, "load_average": os.getloadavg()[0],
        "steps": steps,
        "lists_file_bytes": lists.stat().st_size,
        "bytes_per_region_file": round(lists.stat().st_size / args.regions, 2),
        "bytes_per_region_codes_ids": int(ivf.code_size) + 8,
        "index_faiss_bytes": (work / "index" / "index.faiss").stat().st_size,
        "recall_at_100_vs_exact": round(recall, 4),
        "first_queries_ms": first_ms,
        "warm_p50_ms_k1000": round(float(np.percentile(warm_ms, 50)), 2),
        "warm_p90_ms_k1000": round(float(np.percentile(warm_ms, 90)), 2),
    }
    print(json.dumps(result, indent=1))
    out = HERE / "results" / f"ondisk_n{args.regions}_p{args.parts}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--parts", type=int, default=4)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--first", type=int, default=5, help="queries timed right after opening")
    parser.add_argument("--threads", type=int, default=1, help="FAISS OpenMP threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=str(ROOT / "outputs" / "bench_ondisk"))
    parser.add_argument("--keep", action="store_true", help="keep the index and parts")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
