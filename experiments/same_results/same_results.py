"""Run a fixed set of small configurations on the synthetic benchmark and write what
must not change when the code is reorganised: every metric (timings aside), the run
report without paths and timings, and the names of the cache entries (their names
hold the cache keys' hashes: a region store, an index dir, a query-vector file...).

    python experiments/same_results/same_results.py --out before.json   # in one checkout
    python experiments/same_results/same_results.py --out after.json    # in the other
    python experiments/same_results/same_results.py --compare before.json after.json

Run it from the root of the checkout to measure (its ``claid`` is the one imported).
Random weights (seeded), so the numbers show only that two checkouts agree.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path.cwd()
SMALL = ["backbone=dino_vits16", "backbone.pretrained=false", "descriptor.pretrained=false",
         "engine.batch_size=4", "tracking=none"]
TINY = ["dataset.n_scenes=12", "dataset.n_queries=6", "dataset.image_size=[96,128]"]

#: name -> overrides (on top of SMALL + TINY); a "{coco}" is replaced by a detector file
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "whiten_whole_image": ["index=flat_whiten", "search.whole_image_region=true"],
    "rerank_dba_aqe": ["rerank=[dba,aqe]"],
    "ncut_token_cache": ["cutter=ncut", "cache.tokens=true"],
    "recut_token_cache": ["cache.tokens=true", "cutter.tau2=0.3"],
    "maskcut": ["cutter=maskcut"],
    "ivfpq": ["index=ivfpq", "index.k=200"],
    "from_file": ["cutter=from_file", "cutter.path={coco}"],
}


def _compose(cache_root: Path, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    base = [f"paths.root_dir={cache_root}", f"paths.output_dir={cache_root}/run"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=base + SMALL + TINY + overrides)


def _detector_file(cfg, path: Path) -> Path:
    """A COCO results file with three boxes per database image (deterministic)."""
    from hydra.utils import instantiate
    from PIL import Image

    bench = instantiate(cfg.dataset)
    entries = []
    for n, image_id in enumerate(sorted(bench.database)):
        width, height = Image.open(bench.path(image_id)).size
        for j, (fx, fy, fw, fh) in enumerate(((0.1, 0.1, 0.5, 0.5), (0.4, 0.3, 0.5, 0.6), (0, 0, 1, 1))):
            entries.append({"image_id": image_id, "bbox": [fx * width, fy * height, fw * width, fh * height],
                            "score": 1.0 - 0.1 * j - 0.001 * n})
    path.write_text(json.dumps(entries))
    return path


#: An index dir's name: its key holds the region store's content hash, which differs
#: between two extractions of the same images (shard names are unique), so index dirs
#: are compared by their keys with that hash left out (:func:`_index_keys`).
INDEX_DIR = re.compile(r"index-(dba-)?[0-9a-f]{12}")


def _index_keys(cache: Path) -> list[str]:
    """The key of every index dir in ``cache``, the store's content hash replaced."""
    keys = []
    for meta in sorted(cache.glob("index-*/search.json")):
        key = node = json.loads(meta.read_text())["key"]
        while isinstance(node, dict) and "upstream" not in node and "source" in node:
            node = node["source"]  # a DBA index dir: keyed by the index it augments
        if isinstance(node, dict) and isinstance(node.get("upstream"), dict):
            node["upstream"]["regions"] = "<store content>"
        keys.append(json.dumps(key, sort_keys=True))
    return sorted(keys)


def _strip(value, cache_root: str):
    """Paths under the scratch folder made relative; floats rounded to 12 digits."""
    if isinstance(value, dict):  # wall-clock seconds differ from run to run
        return {k: _strip(v, cache_root) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_strip(v, cache_root) for v in value]
    if isinstance(value, str):  # index dirs are compared by their keys (index_keys)
        return INDEX_DIR.sub(r"index-\1<key>", value.replace(cache_root, "<root>"))
    if isinstance(value, float):
        return value if not math.isfinite(value) else round(value, 12)
    return value


def measure(out: Path, only: list[str] | None, scratch: Path) -> None:
    from claid.pipeline import run

    results = {}
    # one fixed folder: the dataset's root is part of every cache key
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    root = scratch
    os.environ["PROJECT_ROOT"] = str(root)
    for name, overrides in VARIANTS.items():
        if only and name not in only:
            continue
        if any("{coco}" in o for o in overrides):
            coco = _detector_file(_compose(root, []), root / "detections.json")
            overrides = [o.replace("{coco}", str(coco)) for o in overrides]
        cfg = _compose(root, overrides)
        result = run(cfg, run_dir=root / "runs" / name)
        report = json.loads((result.run_dir / "metrics.json").read_text())
        report.pop("timing", None)
        report["metrics"] = {k: v for k, v in report["metrics"].items() if not k.startswith("time/")}
        cache_dir = root / "outputs" / "cache"
        cache = sorted(p.name for p in cache_dir.iterdir() if not p.name.startswith(".") and not INDEX_DIR.match(p.name))
        results[name] = _strip({"report": report, "cache_entries": cache, "index_keys": _index_keys(cache_dir)},
                               str(root))
        print(f"{name}: {len(report['metrics'])} metrics, cache {len(cache)} entries", flush=True)
    out.write_text(json.dumps(results, indent=1, sort_keys=True))
    print(f"wrote {out}")


def _diff(a, b, where: str, found: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                found.append(f"{where}.{key}: only in {'after' if key not in a else 'before'}")
            else:
                _diff(a[key], b[key], f"{where}.{key}", found)
    elif a != b:
        found.append(f"{where}: {json.dumps(a)[:200]} != {json.dumps(b)[:200]}")


def compare(before: Path, after: Path) -> int:
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    found: list[str] = []
    _diff(a, b, "", found)
    for line in found:
        print(line)
    n_metrics = sum(len(v["report"]["metrics"]) for v in a.values())
    n_cache = sum(len(v["cache_entries"]) for v in a.values())
    print(f"{len(a)} variants, {n_metrics} metrics, {n_cache} cache entry names compared: "
          + ("identical" if not found else f"{len(found)} differences"))
    return 1 if found else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "claid-same-results",
                        help="emptied first; the same path in both checkouts (it is part of the cache keys)")
    args = parser.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))
    if not args.out:
        parser.error("--out or --compare")
    sys.path.insert(0, str(ROOT))
    measure(args.out, args.only, args.scratch)


if __name__ == "__main__":
    main()
