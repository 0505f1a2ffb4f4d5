"""Scale benchmark: every stage after extraction, on generated region stores.

Writes a region store with the real writer (``claid.store.generated``: random unit
vectors, ``--regions`` per image, float16), then calls the functions ``pipeline.run``
calls, in its order: region_table, index_stage, search_stage, evaluate,
baseline_scores, detection_stage. For each stage it records the wall time and the
peak anonymous resident memory (``RssAnon``) of this process, sampled every few ms
by a separate process from /proc; the resident pages of the memory-mapped store
(``RssFile``, which the kernel can drop) are reported beside it, not counted.

    python experiments/bench_scale/bench_scale.py --images 27000 --index flat
    python experiments/bench_scale/bench_scale.py --table   # results/*.json -> markdown

See README.md here for the commands and the results.
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
STAGES = ("region_table", "index", "search", "evaluate", "baselines", "detection")

_SAMPLER = """
import sys, time
pid, out = sys.argv[1], sys.argv[2]
with open(out, "w") as log:
    while True:
        try:
            fields = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status") if l.startswith("Rss"))
        except (FileNotFoundError, ProcessLookupError):
            break
        log.write(f"{time.time()} {fields['RssAnon'].split()[0]} {fields['RssFile'].split()[0]}\\n")
        log.flush()
        time.sleep(0.005)
"""


def make_benchmark(store, n_queries: int, seed: int):
    """A lab-protocol Benchmark over the store's images: each query is one database
    image with 10 random positives, and every image has one ground-truth box."""
    from claid.structures import Benchmark, Query

    rng = np.random.default_rng(seed)
    ids = store.image_ids
    chosen = rng.choice(len(ids), size=min(n_queries, len(ids)), replace=False)
    queries = [Query(image=ids[i], box=None, qid=f"q{k}",
                     positives=[ids[j] for j in rng.choice(len(ids), 10, replace=False) if j != i],
                     junk=[]) for k, i in enumerate(chosen)]
    gt = {image_id: np.array([[10, 20, 200, 220]], np.float32) for image_id in ids}
    return Benchmark(name="scale", root="", database=list(ids), queries=queries, gt_boxes=gt,
                     protocol={"family": "lab", "remove_queries_from_db": False}), chosen


def query_vectors(store, chosen: np.ndarray, regions: int, seed: int) -> np.ndarray:
    """(Q, D) float32: the first region of each query image plus noise, unit rows."""
    rows = np.sort(chosen * regions)
    order = np.argsort(np.argsort(chosen * regions))
    from claid.index.search_table import region_table

    picked = region_table(store, None).gather(rows)[order]
    noisy = picked + np.random.default_rng(seed).normal(0, 0.02, picked.shape).astype(np.float32)
    return noisy / np.linalg.norm(noisy, axis=1, keepdims=True)


def run(args) -> dict:
    import faiss
    from omegaconf import OmegaConf

    from claid.engine.extraction_stage import whole_image_stage
    from claid.evaluation import evaluate, scores_to_metrics
    from claid.evaluation.baselines import BaselineSettings, baseline_scores, shuffle_repeats_of
    from claid.evaluation.detection_stage import detection_stage
    from claid.index.index_stage import IndexSettings, SearchSettings, index_stage, search_stage
    from claid.index.search_table import region_table
    from claid.store import RegionStore

    faiss.omp_set_num_threads(1)  # k-means spin-waits on a shared 2-core machine
    work = Path(args.workdir)
    store_dir = work / f"store-n{args.images}-r{args.regions}-d{args.dim}"
    started = time.perf_counter()
    if not (store_dir / "manifest.json").exists() or not (store_dir / "shards").exists():
        # in a child process: the generator's freed buffers must not count as this
        # process's memory (in a real run, extraction writes through bounded batches)
        shutil.rmtree(store_dir, ignore_errors=True)
        code = ("import sys; from claid.store.generated import write_synthetic_store as w; "
                f"w({str(store_dir)!r}, n_images={args.images}, regions_per_image={args.regions}, "
                f"dim={args.dim}, seed={args.seed})")
        subprocess.run([sys.executable, "-c", code], check=True)
    write_s = time.perf_counter() - started
    store = RegionStore.open(str(store_dir))
    if store.num_images != args.images:  # a writer killed part way leaves a smaller store
        raise SystemExit(f"{store_dir} holds {store.num_images} images, not {args.images}: "
                         "delete it and run again")
    bench, chosen = make_benchmark(store, args.queries, args.seed)
    qvecs = query_vectors(store, chosen, args.regions, args.seed)
    index_cfg = OmegaConf.load(ROOT / "conf" / "index" / f"{args.index}.yaml")
    for override in args.set:
        key, value = override.split("=", 1)
        index_cfg[key] = OmegaConf.create({"v": value})["v"] if value != "null" else None
    search = OmegaConf.load(ROOT / "conf" / "config.yaml").search
    if args.memory_gb is not None:
        search.memory_gb = args.memory_gb
    index_node = OmegaConf.to_container(index_cfg, resolve=True)
    index_settings = IndexSettings(node={k: v for k, v in index_node.items() if k != "k"}, seed=args.seed,
                                   k=index_node.get("k"))
    search_settings = SearchSettings.from_node(OmegaConf.to_container(search, resolve=True))
    cache = work / f"cache-{os.getpid()}"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)

    samples = work / f"rss-{os.getpid()}.txt"
    sampler = subprocess.Popen([sys.executable, "-c", _SAMPLER, str(os.getpid()), str(samples)])
    time.sleep(0.2)
    spans = {}

    def stage(name, fn):
        t0 = time.time()
        value = fn()
        spans[name] = (t0, time.time())
        print(f"{name}: {spans[name][1] - t0:.1f} s", flush=True)
        return value

    whole = whole_image_stage(bench, store, None, cache)
    table = stage("region_table", lambda: region_table(store, None))
    index, index_dir = stage("index", lambda: index_stage(index_settings, table, {"regions": store_dir.name}, cache))
    # the file's size: index.nbytes() would serialise an IVF index (a second copy)
    factory, index_bytes = index.meta["factory"], (index_dir / "index.faiss").stat().st_size
    k = index_settings.k
    rankings = stage("search", lambda: search_stage(index, table, qvecs, bench.queries, k,
                                                     float(search_settings.memory_gb)))
    index = None  # as pipeline.run: the region index is not needed after the search
    metrics = stage("evaluate", lambda: scores_to_metrics(evaluate(rankings, bench)))
    baseline_settings = BaselineSettings(index=index_settings.node, k=k, seed=args.seed,
                                         shuffle_draws=search_settings.shuffle_draws,
                                         global_baseline=search_settings.global_baseline,
                                         memory_gb=search_settings.memory_gb)
    notes = stage("baselines", lambda: baseline_scores(baseline_settings, bench, rankings, qvecs, whole,
                                                       store)).notes
    stage("detection", lambda: detection_stage(store, bench))
    time.sleep(0.1)
    sampler.terminate()
    sampler.wait()
    rows = np.loadtxt(samples, ndmin=2)
    samples.unlink()
    shutil.rmtree(cache, ignore_errors=True)
    result = {
        "images": args.images, "regions_per_image": args.regions, "dim": args.dim,
        "regions": store.num_regions, "queries": len(bench.queries), "index": args.index,
        "overrides": args.set, "k": k, "memory_gb": float(search_settings.memory_gb),
        "factory": factory, "index_bytes": index_bytes,
        "global_baseline": notes, "store_write_s": round(write_s, 1),
        "shuffle_repeats": shuffle_repeats_of(rankings, search_settings.shuffle_draws),
        "mAP-all": metrics.get("lab/mAP-all"), "stages": {},
        "load_average": os.getloadavg(), "cpus": os.cpu_count(),
    }
    for name, (t0, t1) in spans.items():
        inside = rows[(rows[:, 0] >= t0) & (rows[:, 0] <= t1)]
        inside = inside if len(inside) else rows[np.argmin(np.abs(rows[:, 0] - t1))][None]
        result["stages"][name] = {"seconds": round(t1 - t0, 2),
                                  "peak_anon_gib": round(inside[:, 1].max() / 2**20, 2),
                                  "peak_file_gib": round(inside[:, 2].max() / 2**20, 2)}
    before = rows[rows[:, 0] < spans["region_table"][0]]
    result["before_stages_anon_gib"] = round(before[:, 1].max() / 2**20, 2) if len(before) else None
    result["peak_anon_gib"] = round(rows[:, 1].max() / 2**20, 2)
    return result


def exponent(small_s: float, big_s: float, log_ratio: float) -> str:
    """Growth exponent of a time between two sizes ("-" below 0.05 s: not measurable)."""
    if min(small_s, big_s) < 0.05:
        return "-"
    return f"{np.log(big_s / small_s) / log_ratio:.2f}"


def table(paths: list[Path]) -> str:
    """Markdown table of results, one row per stage and run, with the growth exponent
    between the smallest and the largest run of each (index, dim) series."""
    runs = sorted((json.loads(p.read_text()) for p in paths),
                  key=lambda r: (r["index"], r["dim"], r["regions"]))
    lines = ["| index | images x regions (D) | " + " | ".join(STAGES)
             + " | RssAnon before / peak of the stages |", "|---|---|" + "---|" * len(STAGES) + "---|"]
    for r in runs:
        cells = [f"{r['stages'][s]['seconds']} s / {r['stages'][s]['peak_anon_gib']} GiB"
                 if s in r["stages"] else "-" for s in STAGES]
        # the stages' peak: between them the benchmark itself sizes the index (older
        # runs serialised it to do so); the process-wide peak stays in the JSON
        peak = max(r["stages"][s]["peak_anon_gib"] for s in r["stages"])
        lines.append(f"| {r['index']} k={r['k']} | {r['images']:,} x {r['regions_per_image']} "
                     f"({r['dim']}) | " + " | ".join(cells)
                     + f" | {r['before_stages_anon_gib']} / {peak} GiB |")
    series: dict = {}
    for r in runs:
        series.setdefault((r["index"], r["dim"], r["regions_per_image"]), []).append(r)
    for (name, _, _), rs in series.items():
        if len(rs) < 2:
            continue
        small, big = rs[0], rs[-1]
        ratio = np.log(big["regions"] / small["regions"])
        exps = [exponent(small["stages"][s]["seconds"], big["stages"][s]["seconds"], ratio)
                for s in STAGES]
        lines.append(f"| {name}: time exponent | {small['images']:,} -> {big['images']:,} | "
                     + " | ".join(exps) + " | |")
    return "\n".join(lines)


def capacity(memory_gib: list[float], dims: list[int], regions: int, queries: int) -> str:
    """Markdown table: the largest collection (images) each shipped index preset fits
    in each memory size, by ``claid.index.memory_estimate`` (the estimate that stops a
    run before extraction)."""
    from omegaconf import OmegaConf

    from claid.index.index_stage import SearchSettings
    from claid.index.memory_estimate import GIB, estimate_run_memory, memory_settings

    presets = sorted(p.stem for p in (ROOT / "conf" / "index").glob("*.yaml"))
    lines = ["| preset | D | " + " | ".join(f"{m:g} GiB" for m in memory_gib) + " |",
             "|---|---|" + "---|" * len(memory_gib)]
    search = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "config.yaml").search)
    search = SearchSettings.from_node({**search, "regions_per_image": regions})
    for preset in presets:
        for dim in dims:
            cfg = memory_settings(index=OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "index" / f"{preset}.yaml")),
                                  descriptor_dim=dim, stored_dtype="float16", search=search)
            cells = []
            for memory in memory_gib:
                low, high = 0, 10**9
                while low < high:  # largest n_images whose estimate fits
                    mid = (low + high + 1) // 2
                    fits = estimate_run_memory(cfg, mid, queries).total <= memory * GIB
                    low, high = (mid, high) if fits else (low, mid - 1)
                cells.append(f"{low:,}")
            lines.append(f"| {preset} | {dim} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2700)
    parser.add_argument("--regions", type=int, default=20, help="regions per image")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--index", default="flat", help="a conf/index preset")
    parser.add_argument("--set", nargs="*", default=[], help="index overrides, e.g. k=1000")
    parser.add_argument("--queries", type=int, default=1250)
    parser.add_argument("--memory-gb", type=float, default=None,
                        help="search.memory_gb (default: conf/config.yaml)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=str(ROOT / "outputs" / "bench_scale"))
    parser.add_argument("--table", action="store_true", help="print the table of results/*.json")
    parser.add_argument("--capacity", type=float, nargs="*",
                        help="print the largest collection per preset for these memory sizes (GiB)")
    args = parser.parse_args()
    if args.capacity:
        print(capacity(args.capacity, [2048, 768], args.regions, args.queries))
        return
    if args.table:
        print(table(sorted((HERE / "results").glob("*.json"))))
        return
    result = run(args)
    name = f"scale_n{args.images}_r{args.regions}_d{args.dim}_{args.index}"
    name += "".join(f"_{o.replace('=', '')}" for o in args.set)
    from claid.artifacts import atomic_write_json

    atomic_write_json(HERE / "results" / f"{name}.json", result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
