"""TokenCut and MaskCut beside k-sums and NCut on the same planted token maps (Table V style).

    .venv/bin/python experiments/bench_detector/bench_single_cut.py [--images 3] [--big]

Per cutter: median wall seconds per image, seconds per cut (total / total cuts),
regions per image and recall of the planted objects at IoU 0.5. Single thread.
``--big`` adds the ViT-B/8 360x480 size (45x60 patches; dense eigh, slow).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from claid.cutters import cut_regions  # noqa: E402
from claid.cutters.planted import best_iou, planted_token_map  # noqa: E402
from claid.cutters.single_cut import MaskCutCutter, TokenCutCutter  # noqa: E402
from claid.structures import PatchGrid  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--big", action="store_true")
    args = parser.parse_args()
    sizes = {"ViT-S/16 360x480": ((22, 30), 384)}
    if args.big:
        sizes["ViT-B/8 360x480"] = ((45, 60), 768)
    warm = planted_token_map((16, 20), 32, seed=0)
    cut_regions(warm.tokens, warm.grid, cutter="ksums")
    cut_regions(warm.tokens, warm.grid, cutter="ncut")
    tokencut, maskcut = TokenCutCutter(), MaskCutCutter()
    methods = {
        "CLAID (k-sums)": lambda m: cut_regions(m.tokens, m.grid, cutter="ksums"),
        "CLAID (NCut)": lambda m: cut_regions(m.tokens, m.grid, cutter="ncut"),
        "TokenCut": lambda m: tokencut(PatchGrid(tokens=m.tokens, grid=m.grid, patch_size=16)),
        "MaskCut N=3 (no CRF)": lambda m: maskcut(
            PatchGrid(tokens=m.tokens, grid=m.grid, patch_size=16)
        ),
    }
    print(
        f"{'size':<18} {'method':<22} {'imgs':>4} {'#cut':>5} {'s/image':>8} {'s/cut':>8} {'regions':>7} {'rec@.5':>6}"
    )
    for size, (grid, dim) in sizes.items():
        maps = [planted_token_map(grid, dim, seed=1 + i) for i in range(args.images)]
        for name, fn in methods.items():
            walls, trees = [], []
            for m in maps:
                t0 = time.perf_counter()
                trees.append(fn(m))
                walls.append(time.perf_counter() - t0)
            cuts = sum(t.n_cuts for t in trees)
            ious = np.concatenate([best_iou(m.object_masks, t.masks) for m, t in zip(maps, trees)])
            print(
                f"{size:<18} {name:<22} {len(maps):>4} {cuts / len(maps):>5.1f} {np.median(walls):>8.3f} "
                f"{sum(walls) / max(1, cuts):>8.3f} {np.mean([len(t) for t in trees]):>7.1f} {np.mean(ious >= 0.5):>6.2f}"
            )


if __name__ == "__main__":
    main()
