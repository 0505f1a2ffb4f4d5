"""Peak memory of a whole run (run.py) on a small collection, with and without one
12-megapixel photo.

    python experiments/bench_memory/large_photo.py [--workdir DIR] [--code DIR]

Builds two manifest collections from scikit-image's sample photos: three small
photos plus a query (the "normal" run), and the same plus ``big.jpg``, the astronaut
photo upscaled to 4000x3000 (JPEG, quality 92). Runs ``run.py`` on each with random
weights (``backbone=dino_vits16``, the default ResNet-50 descriptor, tracking off, an
empty cache) and prints the peak resident memory of each run, measured by the
kernel for that child process (``os.wait4``'s ``ru_maxrss``, the figure
``/usr/bin/time -v`` prints as "Maximum resident set size"). ``--code`` runs another
checkout of claid (e.g. an older commit exported with ``git archive``) for a
before/after comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

REPO = Path(__file__).resolve().parents[2]


def make_collection(root: Path, with_big_photo: bool) -> Path:
    """Three small database photos, one query photo, and optionally a 4000x3000 one."""
    (root / "db").mkdir(parents=True)
    (root / "q").mkdir()
    for name in ("coffee", "chelsea", "rocket"):
        Image.fromarray(getattr(data, name)()).save(root / "db" / f"{name}.jpg", quality=90)
    Image.fromarray(data.astronaut()).save(root / "q" / "astro.jpg", quality=90)
    positive = "db/coffee.jpg"
    if with_big_photo:
        big = Image.fromarray(data.astronaut()).resize((4000, 3000), Image.BICUBIC)
        big.save(root / "db" / "big.jpg", quality=92)
        positive = "db/big.jpg"
    query = {"image": "q/astro.jpg", "box": [100, 20, 300, 250], "positives": [positive], "qid": "astro"}
    (root / "queries.jsonl").write_text(json.dumps(query) + "\n")
    return root


def peak_rss_of_run(code: Path, collection: Path, work: Path) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one run.py process on ``collection``: the
    kernel's ``ru_maxrss`` of that child alone (``os.wait4``)."""
    args = [sys.executable, "run.py", "backbone=dino_vits16", "backbone.pretrained=false",
            "descriptor.pretrained=false", "tracking=none", "dataset=manifest",
            f"dataset.root={collection}", f"paths.cache_dir={work / 'cache'}",
            "search.shuffle_draws=10", f"hydra.run.dir={work / 'run'}"]
    start = time.perf_counter()
    log = work.with_suffix(".log")
    with open(log, "w") as out:
        child = subprocess.Popen(args, cwd=code, stdout=out, stderr=subprocess.STDOUT,
                                 env={**os.environ, "PYTHONPATH": str(code)})
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"run.py failed on {collection}; see {log}")
    return usage.ru_maxrss / 1024, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--code", type=Path, default=REPO, help="claid checkout to run")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="claid-bench-memory-"))
    print(f"claid code: {args.code}   work dir: {work}")
    print(f"{'collection':<34} {'peak RSS MiB':>12} {'wall s':>8}")
    for name, big in (("3 small photos (normal run)", False), ("+ one 4000x3000 JPEG (12 MP)", True)):
        collection = make_collection(work / f"photos-{int(big)}", with_big_photo=big)
        peak, wall = peak_rss_of_run(args.code, collection, work / f"out-{int(big)}")
        print(f"{name:<34} {peak:>12.0f} {wall:>8.1f}")
    print(f"numpy {np.__version__}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
