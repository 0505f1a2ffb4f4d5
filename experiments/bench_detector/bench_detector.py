"""Detector speed, Table V style: k-sums vs NCut bisection, single thread.

Cuts synthetic planted token maps (``claid.cutters.planted``) of the sizes of
DINO ViT-B/8 at 360x480 (45x60 patches, D=768) and ViT-S/16 (22x30, D=384), and
prints, per size and cutter: cuts per image, time per image (the whole
``cut_regions`` call, Gram matrix included), time per cut, regions per image and
the recall of the planted objects at IoU 0.5; then the speed-up over the slow
per-patch Python reference (``claid.cutters.reference``) on the same images.

    .venv/bin/python experiments/bench_detector/bench_detector.py [--images 10]

See README.md beside this file for what the numbers mean.
"""

from __future__ import annotations

import os

# one thread everywhere; the BLAS pools read these when numpy is first imported
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

from claid.cutters import cut_regions  # noqa: E402
from claid.cutters.affinity import gram_matrix, normalise_rows  # noqa: E402
from claid.cutters.planted import PlantedTokenMap, best_iou, planted_token_map  # noqa: E402
from claid.cutters.reference import reference_cut_regions  # noqa: E402
from claid.structures import RegionTree  # noqa: E402

SIZES = {"ViT-B/8 360x480": ((45, 60), 768), "ViT-S/16 360x480": ((22, 30), 384)}
CUTTERS = {"CLAID (k-sums)": "ksums", "CLAID (NCut)": "ncut"}
TIME_BUDGET_S = 0.15  # the target for k-sums on the 45x60x768 map


@dataclass
class Row:
    size: str
    method: str
    images: int
    cuts_per_image: float
    wall_per_image_s: float
    cpu_per_image_s: float
    wall_per_cut_s: float
    regions_per_image: float
    recall_at_05: float


def _timed(run: Callable[[], RegionTree], repeats: int) -> tuple[RegionTree, float, float]:
    """Median wall-clock and process-CPU seconds of ``repeats`` runs."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        tree = run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return tree, float(np.median(walls)), float(np.median(cpus))


def _row(size: str, method: str, maps: list[PlantedTokenMap], trees, walls, cpus) -> Row:
    cuts = np.array([t.n_cuts for t in trees])
    ious = np.concatenate([best_iou(m.object_masks, t.masks) for m, t in zip(maps, trees)])
    return Row(
        size=size,
        method=method,
        images=len(maps),
        cuts_per_image=float(cuts.mean()),
        wall_per_image_s=float(np.median(walls)),
        cpu_per_image_s=float(np.median(cpus)),
        wall_per_cut_s=float(np.sum(walls) / max(1, cuts.sum())),
        regions_per_image=float(np.mean([len(t) for t in trees])),
        recall_at_05=float(np.mean(ious >= 0.5)),
    )


def bench(n_images: int, repeats: int, reference_images: dict[str, int], seed: int) -> dict:
    """Run every size x cutter and the reference; returns rows and derived ratios."""
    warm = planted_token_map((16, 20), 32, seed=0)
    for cutter in CUTTERS.values():  # numba compiles (or loads its cache) here, not in the timings
        cut_regions(warm.tokens, warm.grid, cutter=cutter)
    rows: list[Row] = []
    notes: dict[str, dict] = {}
    for size, (grid, dim) in SIZES.items():
        maps = [planted_token_map(grid, dim, seed=seed + i) for i in range(n_images)]
        unit = normalise_rows(maps[0].tokens)
        _, gram_wall, gram_cpu = _timed(lambda unit=unit: gram_matrix(unit), repeats)
        per_cutter = {}
        for method, cutter in CUTTERS.items():
            trees, walls, cpus = [], [], []
            for m in maps:
                tree, wall, cpu = _timed(
                    lambda m=m, cutter=cutter: cut_regions(m.tokens, m.grid, cutter=cutter),
                    repeats,
                )
                trees.append(tree)
                walls.append(wall)
                cpus.append(cpu)
            rows.append(_row(size, method, maps, trees, walls, cpus))
            per_cutter[cutter] = (trees, walls, cpus)
        n_ref = min(reference_images.get(size, 1), n_images)
        ref_trees, ref_walls, ref_cpus = [], [], []
        for m in maps[:n_ref]:
            tree, wall, cpu = _timed(lambda m=m: reference_cut_regions(m.tokens, m.grid), 1)
            ref_trees.append(tree)
            ref_walls.append(wall)
            ref_cpus.append(cpu)
        rows.append(
            _row(size, "reference k-sums (Python)", maps[:n_ref], ref_trees, ref_walls, ref_cpus)
        )
        ksums_trees, ksums_walls, ksums_cpus = per_cutter["ksums"]
        identical = all(
            a.masks.shape == b.masks.shape and bool((a.masks == b.masks).all())
            for a, b in zip(ksums_trees[:n_ref], ref_trees)
        )
        ncut_walls = per_cutter["ncut"][1]
        ksums_cuts = sum(t.n_cuts for t in ksums_trees)
        ncut_cuts = sum(t.n_cuts for t in per_cutter["ncut"][0])
        notes[size] = {
            "gram_wall_s": gram_wall,
            "gram_cpu_s": gram_cpu,
            "reference_images": n_ref,
            "reference_speedup_wall": float(np.sum(ref_walls) / np.sum(ksums_walls[:n_ref])),
            "reference_speedup_cpu": float(np.sum(ref_cpus) / np.sum(ksums_cpus[:n_ref])),
            "reference_identical_regions": identical,
            "ncut_over_ksums_per_image": float(np.median(ncut_walls) / np.median(ksums_walls)),
            "ncut_over_ksums_per_cut": float(
                (np.sum(ncut_walls) / max(1, ncut_cuts))
                / (np.sum(ksums_walls) / max(1, ksums_cuts))
            ),
        }
    return {"rows": [asdict(r) for r in rows], "notes": notes}


def render(result: dict, load_before: tuple[float, float, float]) -> str:
    """The Table-V-like text table and the ratios measured in the same run."""
    lines = [
        "Detector cost on synthetic planted token maps, single thread "
        "(median per image; time per cut = total time / total cuts)",
        f"{'size':<18} {'method':<26} {'imgs':>4} {'#cut':>6} {'TM/image s':>11} "
        f"{'CPU/image s':>11} {'TM/cut s':>9} {'regions':>8} {'recall@.5':>9}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['size']:<18} {r['method']:<26} {r['images']:>4} {r['cuts_per_image']:>6.1f} "
            f"{r['wall_per_image_s']:>11.4f} {r['cpu_per_image_s']:>11.4f} "
            f"{r['wall_per_cut_s']:>9.4f} {r['regions_per_image']:>8.1f} {r['recall_at_05']:>9.3f}"
        )
    lines.append("")
    for size, n in result["notes"].items():
        lines.append(
            f"{size}: Gram matrix {n['gram_wall_s']:.4f} s (CPU {n['gram_cpu_s']:.4f}); NCut/k-sums time per image "
            f"{n['ncut_over_ksums_per_image']:.1f}x, per cut {n['ncut_over_ksums_per_cut']:.1f}x; "
            f"reference/k-sums on {n['reference_images']} image(s) "
            f"{n['reference_speedup_wall']:.1f}x wall, {n['reference_speedup_cpu']:.1f}x CPU "
            f"(identical regions: {'yes' if n['reference_identical_regions'] else 'NO'})"
        )
    big = next(
        r
        for r in result["rows"]
        if r["size"] == "ViT-B/8 360x480" and r["method"] == "CLAID (k-sums)"
    )
    verdict = "PASS" if big["wall_per_image_s"] <= TIME_BUDGET_S else "FAIL"
    blas = ", ".join(
        f"{lib['internal_api']} {lib['version']} ({lib.get('architecture', '?')} kernels)"
        for lib in threadpool_info()
        if lib["user_api"] == "blas"
    )
    lines.append(
        f"BLAS: {blas or 'unknown'}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}"
    )
    load_after = os.getloadavg()
    lines.append(
        f"k-sums 45x60x768 median {big['wall_per_image_s']:.4f} s/image (CPU {big['cpu_per_image_s']:.4f} s) "
        f"vs budget {TIME_BUDGET_S} s: {verdict}; load average before {load_before[0]:.2f}, "
        f"after {load_after[0]:.2f} (other processes share the cores)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10, help="planted maps per size")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per image (median)")
    parser.add_argument(
        "--reference-images",
        type=int,
        default=None,
        help="images the slow reference cuts per size (default 2 at 45x60, 5 at 22x30)",
    )
    parser.add_argument("--seed", type=int, default=0, help="first planted-map seed")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    if args.images < 1 or args.repeats < 1:
        parser.error("--images and --repeats must be >= 1")
    reference = {"ViT-B/8 360x480": 2, "ViT-S/16 360x480": 5}
    if args.reference_images is not None:
        reference = dict.fromkeys(SIZES, args.reference_images)
    load_before = os.getloadavg()
    with threadpool_limits(limits=1):
        result = bench(args.images, args.repeats, reference, args.seed)
    print(render(result, load_before))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
