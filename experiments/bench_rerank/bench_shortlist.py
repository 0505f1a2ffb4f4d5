"""Per-query time of the shortlist re-rankers on one CPU core (README.md here holds the
command and the output).

    OMP_NUM_THREADS=1 python experiments/bench_rerank/bench_shortlist.py superglobal --m 400
    OMP_NUM_THREADS=1 python experiments/bench_rerank/bench_shortlist.py ames --num-rerank 100

``superglobal``: M images of a generated collection (``--per-image`` regions each,
dimension ``--dim``), timed twice: the MDescAug + RerankwMDA arithmetic alone, and the
whole re-ranking of one query (best-region gathering from in-memory whitened vectors
included). ``ames``: a random-weight AMES model scoring one query (``--query-k`` local
descriptors) against ``--num-rerank`` database images (``--database-k`` each, read from
a local-descriptor store), one batch; and the store's bytes per image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return round(float(np.median(times)) * 1000, 2)


def bench_superglobal(args) -> dict:
    from claid.rerank.common import RowSource
    from claid.rerank.superglobal import mdescaug, rerank_with_mda, superglobal_rankings
    from claid.structures import Ranking

    rng = np.random.default_rng(0)
    n_rows = args.m * args.per_image
    x = rng.normal(size=(n_rows, args.dim)).astype(np.float32) + 0.5 * rng.normal(size=args.dim).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    region_image = np.arange(n_rows) // args.per_image
    image_ids = [f"img{i}" for i in range(args.m)]
    rows = RowSource(None, region_image, np.zeros((n_rows, 4), np.float32), image_ids, whitened=x)
    q = x[0] + 0.1 * rng.normal(size=args.dim).astype(np.float32)
    q /= np.linalg.norm(q)
    ranking = Ranking("q", image_ids, np.linspace(1, 0.1, args.m).astype(np.float32), np.zeros((args.m, 4), np.float32))
    shortlist = x[:: args.per_image].copy()

    def core():
        augmented, scores = mdescaug(shortlist, q, k=9, beta=0.15)
        rerank_with_mda(augmented, scores, k=9)

    def whole():
        superglobal_rankings(rows, q[None], [ranking], [set()], m=args.m, k=9, beta=0.15)

    return {"method": "superglobal", "m": args.m, "dim": args.dim, "regions_per_image": args.per_image,
            "core_ms_per_query": _median_ms(core, args.repeats),
            "whole_ms_per_query": _median_ms(whole, args.repeats)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method", choices=["superglobal", "ames"])
    parser.add_argument("--m", type=int, default=400)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--per-image", type=int, default=20)
    parser.add_argument("--num-rerank", type=int, default=100)
    parser.add_argument("--binarised", action="store_true")
    parser.add_argument("--query-k", type=int, default=600)
    parser.add_argument("--database-k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    result = bench_superglobal(args) if args.method == "superglobal" else bench_ames(args)
    result.update(threads=1, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print(json.dumps(result))


def bench_ames(args) -> dict:
    import tempfile

    from claid.rerank.ames import ames_scores
    from claid.rerank.ames_model import build_ames
    from claid.rerank.local_features.binarise import binary_codes
    from claid.rerank.local_features.store import LocalFeatures, LocalFeatureStore

    rng = np.random.default_rng(0)
    model, _ = build_ames(binarised=args.binarised, pretrained=False)
    projection = model.remap_local[0].W.numpy() if args.binarised else None
    with tempfile.TemporaryDirectory() as folder:
        store = LocalFeatureStore(Path(folder) / "local", key={"bench": 1}, dim=args.dim, k=args.database_k,
                                  encoding="binary" if args.binarised else "float16")
        images = [f"img{i}" for i in range(args.num_rerank)]
        for image in images:
            d = rng.normal(size=(args.database_k, args.dim)).astype(np.float32)
            enc = binary_codes(d, projection) if args.binarised else d.astype(np.float16)
            store.append(image, LocalFeatures(enc, np.arange(args.database_k), np.ones(args.database_k, np.float32),
                                              (60, 60)))
        query = rng.normal(size=(args.query_k, args.dim)).astype(np.float32)
        ms = _median_ms(lambda: ames_scores(model, store, query, images, batch=args.num_rerank), args.repeats)
        return {"method": "ames", "binarised": args.binarised, "num_rerank": args.num_rerank,
                "query_k": args.query_k, "database_k": args.database_k, "ms_per_query": ms,
                "bytes_per_image": store.bytes_per_image(),
                "descriptor_bytes_per_image": args.database_k * store.row_bytes}


if __name__ == "__main__":
    main()
