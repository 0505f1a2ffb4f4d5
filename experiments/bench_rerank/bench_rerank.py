"""Time and peak memory of each re-ranking's offline and online parts, and mAP before /
after on the synthetic benchmark (README.md here holds the command and the output).

    python experiments/bench_rerank/bench_rerank.py synthetic            # mAP before/after
    python experiments/bench_rerank/bench_rerank.py scale --n 540000 --method dba
    python experiments/bench_rerank/bench_rerank.py all --sizes 20000 60000 540000

``scale`` generates a collection of ``n`` regions (``--per-image`` regions per image,
clustered so that the kNN graph has structure), keeps it as a memory-mapped float16
file (the store's dtype), indexes it with the index's own factory, and times one
method; every ``scale`` run is its own process, so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _collection(n: int, dim: int, per_image: int, seed: int, folder: Path):
    """A float16 memory-mapped collection: per image a cluster centre, its regions
    around it; images themselves grouped into classes of 20."""
    rng = np.random.default_rng(seed)
    path = folder / f"collection-{n}-{dim}-{per_image}-{seed}.npy"
    if not path.exists():
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
        n_images = -(-n // per_image)
        classes = rng.normal(size=(-(-n_images // 20), dim)).astype(np.float32)
        for start in range(0, n, 65536):
            rows = np.arange(start, min(n, start + 65536))
            image = rows // per_image
            centre = classes[image // 20] + 0.7 * _seeded_normal(image, dim, seed)
            x = centre + 0.5 * rng.normal(size=(rows.size, dim)).astype(np.float32)
            out[rows] = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
        out.flush()
        del out
    vectors = np.load(path, mmap_mode="r")
    region_image = np.arange(n, dtype=np.int64) // per_image
    return vectors, region_image


def _seeded_normal(image: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """A per-image offset that depends only on the image number (chunk-independent)."""
    out = np.empty((image.size, dim), np.float32)
    for value in np.unique(image):
        out[image == value] = np.random.default_rng((seed, int(value))).normal(size=dim)
    return out


def scale(args) -> dict:
    from claid.index import build_index
    from claid.index.search_table import RegionTable
    from claid.rerank.apply import diffuse
    from claid.rerank.common import RowSource
    from claid.rerank.dba import augmented_index, augmented_vectors
    from claid.rerank.diffusion import offline_part
    from claid.rerank.settings import DBASettings, DiffusionSettings

    folder = Path(args.work)
    folder.mkdir(parents=True, exist_ok=True)
    vectors, region_image = _collection(args.n, args.dim, args.per_image, 0, folder)
    n_images = int(region_image[-1]) + 1
    boxes = np.zeros((args.n, 4), np.float32)
    table = RegionTable(None, vectors, region_image, boxes, [str(i) for i in range(n_images)], args.dim)
    started = time.perf_counter()
    index = build_index(table, factory=args.factory, nprobe=args.nprobe, train_size=65536, seed=0)
    build_s = time.perf_counter() - started
    base_gb = _peak_gb()
    rows = RowSource.of_table(index, table)
    queries = np.asarray(vectors[:: max(1, args.n // 100)][:100], dtype=np.float32)
    qids = [str(i) for i in range(len(queries))]
    none = [set() for _ in qids]
    result = {"n": args.n, "dim": args.dim, "per_image": args.per_image, "factory": index.meta["factory"],
              "method": args.method, "index_build_s": round(build_s, 1), "peak_gb_before": round(base_gb, 2)}
    qw = index.transform(queries)
    if args.method == "dba":
        s = DBASettings()
        started = time.perf_counter()
        new, info = augmented_vectors(index, rows, n=s.n, alpha=s.alpha, same_image=s.same_image,
                                      block_rows=s.block_rows)
        dba_index = augmented_index(index, new, {"n": s.n})
        result["offline_s"] = round(time.perf_counter() - started, 1)
        result["peak_gb_offline"] = round(_peak_gb(), 2)
        started = time.perf_counter()
        dba_index.search(queries, 100)
        result["online_s_per_query"] = round((time.perf_counter() - started) / len(queries), 5)
    elif args.method == "diffusion":
        from claid.rerank.diffusion import OutOfReach

        # measured, not guarded, unless --guarded (the defaults: the out-of-reach stop)
        s = DiffusionSettings(truncation=args.truncation) if args.guarded else DiffusionSettings(
            truncation=args.truncation, max_regions=None)
        started = time.perf_counter()
        try:
            offline, info = offline_part(index, rows, s)
        except OutOfReach as err:
            result.update(stopped=str(err), stopped_after_s=round(time.perf_counter() - started, 3))
            print(json.dumps(result))
            return result
        result["offline_s"] = round(time.perf_counter() - started, 1)
        result["peak_gb_offline"] = round(_peak_gb(), 2)
        result["graph_s"] = info["graph_seconds"]
        started = time.perf_counter()
        diffuse(offline, index, rows, qw, qids, none, none, s)
        result["online_s_per_query"] = round((time.perf_counter() - started) / len(queries), 5)
    elif args.method == "aqe":
        from claid.index import search_images
        from claid.rerank.aqe import expand_queries

        started = time.perf_counter()
        plain = search_images(index, queries, region_image, boxes, table.image_ids, qids, k=1000)
        expand_queries(index, rows, queries, plain, none, n=10, alpha=3.0)
        result["offline_s"] = 0.0
        result["online_s_per_query"] = round((time.perf_counter() - started) / len(queries), 5)
    result["peak_gb"] = round(_peak_gb(), 2)
    print(json.dumps(result))
    return result


def synthetic(args) -> list[dict]:
    """mAP before / after each method on the synthetic benchmark through pipeline.run."""
    from hydra import compose, initialize_config_dir

    from claid.pipeline import run

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for rerank in ("aqe", "dba", "diffusion", "[dba,aqe]", "[dba,diffusion]"):
            for same in (("exclude", "include") if "dba" in rerank or "diffusion" in rerank else ("-",)):
                extra = [f"rerank.{m}.same_image={same}" for m in ("dba", "diffusion") if m in rerank]
                with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
                    cfg = compose(config_name="config", overrides=[
                        f"paths.root_dir={tmp}", f"paths.output_dir={tmp}/run", "tracking=none",
                        "backbone=dino_vits8", "backbone.pretrained=false", "descriptor.pretrained=false",
                        f"rerank={rerank}", *extra])
                started = time.perf_counter()
                result = run(cfg, run_dir=Path(tmp) / "runs" / f"{rerank}-{same}")
                m = result.metrics
                out.append({"rerank": rerank, "same_image": same,
                            "mAP-all before": round(m["rerank/before/lab/mAP-all"], 4),
                            "mAP-all after": round(m["rerank/after/lab/mAP-all"], 4),
                            "mAP-50 before": round(m["rerank/before/lab/mAP-50"], 4),
                            "mAP-50 after": round(m["rerank/after/lab/mAP-50"], 4),
                            "rerank s": m.get("time/rerank_s"), "run s": round(time.perf_counter() - started, 1),
                            "regions": result.report["counts"]["regions"]})
                print(json.dumps(out[-1]), flush=True)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("synthetic")
    one = sub.add_parser("scale")
    everything = sub.add_parser("all")
    for p in (one, everything):
        p.add_argument("--dim", type=int, default=128)
        p.add_argument("--per-image", type=int, default=20)
        p.add_argument("--factory", default="IVF1024,PQ32")
        p.add_argument("--nprobe", type=int, default=8)
        p.add_argument("--truncation", type=int, default=1000)
        p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "bench_rerank"))
        p.add_argument("--timeout", type=int, default=900)
    one.add_argument("--n", type=int, required=True)
    one.add_argument("--method", choices=("aqe", "dba", "diffusion"), required=True)
    one.add_argument("--guarded", action="store_true", help="diffusion with its default max_regions")
    everything.add_argument("--sizes", type=int, nargs="+", default=[20000, 60000])
    everything.add_argument("--methods", nargs="+", default=["aqe", "dba", "diffusion"])
    args = parser.parse_args(argv)
    if args.command == "synthetic":
        synthetic(args)
    elif args.command == "scale":
        scale(args)
    else:
        for n in args.sizes:
            for method in args.methods:
                command = [sys.executable, __file__, "scale", "--n", str(n), "--method", method,
                           "--dim", str(args.dim), "--per-image", str(args.per_image), "--factory", args.factory,
                           "--nprobe", str(args.nprobe), "--truncation", str(args.truncation), "--work", args.work]
                try:
                    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
                    line = done.stdout.strip().splitlines()[-1] if done.returncode == 0 else json.dumps(
                        {"n": n, "method": method, "failed": done.stderr.strip().splitlines()[-1:]})
                except subprocess.TimeoutExpired:
                    line = json.dumps({"n": n, "method": method, "stopped": f"over {args.timeout} s"})
                print(line, flush=True)


if __name__ == "__main__":
    main()
