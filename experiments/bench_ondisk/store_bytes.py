"""Bytes per region of the region store, file by file, with the real writer.

Writes a store of ``--images`` images x ``--regions`` regions with ``RegionStoreWriter``
(the extraction's writer): float16 vectors of ``--dim`` (2048: the default resnet50
descriptor; 768: a ViT-B), patch masks on a ``--grid`` (45 x 60: dino_vitb8 on a
480 x 640 image resized to a 360 short side) shaped as the cutter's are (connected
blobs from a hierarchy of splits, coarse to fine), a whole-image vector per image.
Prints each file kind's bytes per region, the per-image part spread over the image's
regions. No file is kept.

    python experiments/bench_ondisk/store_bytes.py --images 2000 --regions 30 --dim 2048
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np


def blob_masks(rng, count: int, grid: tuple[int, int]) -> np.ndarray:
    """(count, h, w) bool: thresholded smooth noise, coarse (big) to fine (small)
    blobs, as a cut hierarchy's regions shrink with depth."""
    h, w = grid
    masks = np.zeros((count, h, w), bool)
    yy, xx = np.mgrid[0:h, 0:w]
    for k in range(count):
        size = max(2.0, min(h, w) / (1 + k / 4))
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        noise = rng.normal(size=(h, w)).cumsum(0).cumsum(1)
        noise = (noise - noise.mean()) / (noise.std() + 1e-6)
        dist = ((yy - cy) / size) ** 2 + ((xx - cx) / size) ** 2
        masks[k] = dist + 0.15 * noise < 1.0
        masks[k, int(cy) % h, int(cx) % w] = True
    return masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--regions", type=int, default=30)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--grid", type=int, nargs=2, default=[45, 60])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from claid.store.writer import RegionStoreWriter
    from claid.structures import RegionDescriptors

    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        writer = RegionStoreWriter(str(store), config={"bytes": vars(args)}, dim=args.dim,
                                   dtype="float16", shard_size=1000)
        r = args.regions
        for i in range(args.images):
            vectors = rng.standard_normal((r + 1, args.dim), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            corner = rng.uniform(0, [320, 240], size=(r, 2))
            boxes = np.concatenate([corner, corner + rng.uniform(16, [320, 240], size=(r, 2))], 1)
            writer.add(RegionDescriptors(
                image_id=f"yfcc/{i:08d}.jpg", image_size=(480, 640), boxes=boxes.astype(np.float32),
                masks=blob_masks(rng, r, tuple(args.grid)), depth=np.arange(1, r + 1),
                parent=np.r_[-1, np.arange(r - 1)], vectors=vectors[1:], whole_vector=vectors[0]),
                cell=(480 / args.grid[0], 640 / args.grid[1]))
        writer.flush()
        sizes = defaultdict(int)
        for path in store.rglob("*"):
            if path.is_file():
                sizes[path.name if path.parent.parent.name == "shards" else "store files"] += path.stat().st_size
        n = args.images * r
        per_region = {name: round(size / n, 1) for name, size in sorted(sizes.items())}
        per_region["total"] = round(sum(sizes.values()) / n, 1)
        print(json.dumps({"images": args.images, "regions_per_image": r, "dim": args.dim,
                          "grid": args.grid, "bytes_per_region": per_region}, indent=1))


if __name__ == "__main__":
    main()
