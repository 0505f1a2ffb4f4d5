"""Re-cut benchmark: a 5-point tau2 sweep on the synthetic benchmark with cache.tokens=true.

The first point runs both networks (detector backbone, region descriptor) and fills
the feature caches; every later point only cuts and pools. Prints the extraction
seconds of each point, the first point over the median re-cut, which networks each
point built, and the disk each artifact takes. Random weights (pretrained=false):
the same compute as published weights, which cannot be downloaded here.

    python experiments/bench_recut/bench_recut.py [--tau2 0.1 0.2 0.3 0.4 0.5] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from claid.config.run_settings import run_settings
from claid.engine.extraction_stage import extract_stage
from claid.structures import PatchGrid
from claid.threads import apply_threads

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tau2", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5])
    parser.add_argument("--overrides", nargs="*", default=[],
                        help="further Hydra overrides (e.g. backbone=dino_vits16)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    points = []
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(CONF), version_base=None):
        cache = Path(tmp) / "cache"
        for k, tau2 in enumerate(args.tau2):
            cfg = compose("config", overrides=[
                "backbone.pretrained=false", "descriptor.pretrained=false", "tracking=none",
                "cache.tokens=true", f"paths.root_dir={tmp}", f"paths.output_dir={tmp}/run",
                f"paths.data_dir={ROOT / 'data'}", f"paths.cache_dir={cache}",
                f"cutter.tau2={tau2}",
                *args.overrides])
            if k == 0:
                apply_threads(cfg.engine.threads)
            bench = instantiate(cfg.dataset)
            settings = run_settings(cfg)
            parts = settings.regions.networks
            if k == 0:
                # numba compiles the cutter once per process: not part of any point
                rng = np.random.default_rng(0)
                parts.get("cutter")(PatchGrid(tokens=rng.random((48, 8), np.float32),
                                              grid=(6, 8), patch_size=8))
            started = time.perf_counter()
            store = extract_stage(settings.extraction, bench, settings.regions, cache)
            seconds = time.perf_counter() - started
            points.append({"tau2": tau2, "seconds": round(seconds, 2),
                           "images": store.num_images, "regions": store.num_regions,
                           "networks_built": sorted(n for n in parts._built if n != "cutter"),
                           "token_sources": store.summary["token_sources_rank0"],
                           "map_sources": store.summary["map_sources_rank0"]})
            print(json.dumps(points[-1]), flush=True)
        disk = {kind: sum(folder_bytes(d) for d in cache.glob(f"{kind}-*"))
                for kind in ("tokens", "featuremaps", "regions")}
        disk["region_stores"] = len(list(cache.glob("regions-*")))
    first, recuts = points[0]["seconds"], [p["seconds"] for p in points[1:]]
    result = {"points": points, "first_s": first, "recut_median_s": statistics.median(recuts),
              "first_over_recut": round(first / statistics.median(recuts), 1),
              "disk_bytes": disk, "overrides": args.overrides}
    print(f"first point {first:.1f} s (networks + cut + pool), re-cuts "
          f"{', '.join(f'{s:.2f}' for s in recuts)} s: first / median re-cut = "
          f"{result['first_over_recut']}x")
    print(f"disk: tokens {disk['tokens'] / 2**20:.1f} MiB, descriptor maps "
          f"{disk['featuremaps'] / 2**20:.1f} MiB, {disk['region_stores']} region stores "
          f"{disk['regions'] / 2**20:.1f} MiB in all")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
