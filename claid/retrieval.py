"""Search an indexed collection with new queries, from Python or the command line.

    claid.search(["query.jpg"], boxes=[(10, 20, 200, 180)], index_dir="outputs/cache/index-ab12")

    python -m claid search --index-dir outputs/cache/index-ab12 query.jpg --box 10 20 200 180

An index dir (written by a ``run.py`` job; its path is in the run's metrics.json under
settings.index) holds the FAISS index, the image and box of every indexed region and
the descriptor config, so queries are described exactly as the collection was.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from claid.datasets.boxes import check_box
from claid.structures import Ranking


def load_search_table(index_dir: str | Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """(search.json content, region_image (N,) int64, boxes (N, 4) float32) of an index dir."""
    index_dir = Path(index_dir)
    meta_path = index_dir / "search.json"
    if not meta_path.exists():
        raise FileNotFoundError(
            f"{index_dir} is not a claid index dir (no search.json); run `python run.py` on the "
            "collection first and pass the index dir printed in its metrics.json (settings.index)"
        )
    meta = json.loads(meta_path.read_text())
    with np.load(index_dir / "regions.npz") as table:
        return meta, table["region_image"].astype(np.int64), table["boxes"].astype(np.float32)


def search(
    queries: Sequence[str | Path | Image.Image],
    *,
    index_dir: str | Path,
    boxes: Sequence[Sequence[float] | None] | None = None,
    top: int = 100,
    k: int | None = None,
    descriptor=None,
) -> list[Ranking]:
    """Rank the indexed images for each query image (+ optional box).

    Args:
        queries: image paths or PIL images.
        index_dir: an index dir written by the pipeline.
        boxes: per query (x1, y1, x2, y2) in that image's pixels, or None for the
            whole image; default: whole images.
        top: how many images to keep per query.
        k: regions retrieved per query before image ranking (None: all).
        descriptor: an already built RegionDescriptor (default: built from the
            config recorded in the index dir, with its weights settings).
    Returns:
        One Ranking per query (qid "0", "1", ...): image ids, scores, localised boxes.
    """
    from hydra.utils import instantiate

    from claid.images import load_image
    from claid.index import RegionIndex, search_images

    meta, region_image, region_boxes = load_search_table(index_dir)
    if boxes is None:
        boxes = [None] * len(queries)
    if len(boxes) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(boxes)} boxes")
    if descriptor is None:
        descriptor = instantiate(meta["descriptor"])
    rows = []
    for i, (query, box) in enumerate(zip(queries, boxes)):
        image = query if isinstance(query, Image.Image) else load_image(str(query))
        if box is not None:
            where = f"query {i}" + ("" if isinstance(query, Image.Image) else f" ({query})")
            box = check_box(box, (image.height, image.width), where=where, tolerance=0.0)
        rows.append(descriptor.describe_query(image, box))
    rankings = search_images(
        RegionIndex.load(index_dir),
        np.stack(rows).astype(np.float32),
        region_image,
        region_boxes,
        meta["image_ids"],
        [str(i) for i in range(len(rows))],
        k=k,
    )
    return [Ranking(r.qid, r.images[:top], r.scores[:top], r.boxes[:top]) for r in rankings]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m claid search", description=__doc__.split("\n")[0])
    parser.add_argument("image", help="query image")
    parser.add_argument("--index-dir", required=True, help="index dir written by run.py")
    parser.add_argument("--box", nargs=4, type=float, metavar=("X1", "Y1", "X2", "Y2"), default=None)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    (ranking,) = search([args.image], index_dir=args.index_dir, boxes=[args.box], top=args.top)
    rows = [
        {"rank": i + 1, "image": image, "score": float(score), "box": [round(float(v), 1) for v in box]}
        for i, (image, score, box) in enumerate(zip(ranking.images, ranking.scores, ranking.boxes))
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        print(f"{row['rank']:>4}  {row['score']:.4f}  {row['image']}  box={row['box']}")


if __name__ == "__main__":
    main()
