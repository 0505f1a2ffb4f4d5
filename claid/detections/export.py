"""``python -m claid export-coco STORE out.json [--dataset-root DIR]``: a region store
as a COCO dataset file.

    images        {"id", "file_name" (the image id: path relative to the dataset root),
                   "width", "height"}
    annotations   {"id", "image_id", "category_id": 1, "bbox": [x, y, w, h] original
                   pixels, "segmentation": COCO compressed RLE in original pixels (the
                   patch mask spread over the image by claid.masks' rule), "area" (its
                   pixels), "iscrowd": 0, and claid's extras: "depth", "parent" (the
                   parent region's annotation id, -1 none), "score" (1.0: claid's regions
                   carry no confidence), "claid_mask" ({"grid": [h, w], "cell": [cy, cx],
                   "counts": RLE of the patch-grid mask})}
    categories    [{"id": 1, "name": "fg"}]   (CutLER's single class-agnostic category)
    info          {"description", "claid_store", "dataset_root"}

pycocotools, detectron2's ``load_coco_json`` (what CutLER's self-training reads its
pseudo-labels through) and FiftyOne's COCO importer read it. ``cutter=from_file``
reads it back exactly: its ``claid_mask`` gives the stored patch masks as they were,
so the same descriptor gives the same vectors. A store written without masks exports
each region's box as its segmentation and no ``claid_mask``. The file is written
atomically.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np

from claid.datasets.tar_shards import split_member_path
from claid.detections.coco_masks import encode_mask
from claid.masks import patch_mask_to_pixels

CATEGORY = {"id": 1, "name": "fg"}


def store_to_coco(store, dataset_root: str | None = None) -> dict:
    """The COCO dict of every region of an opened ``RegionStore`` (module docstring).

    Raises:
        FileNotFoundError: ``dataset_root`` lacks an image of the store.
    """
    root = dataset_root or (store.config.get("dataset") or {}).get("root")
    boxes = np.asarray(store.boxes(), dtype=np.float64)
    depth, parent = store.depth(), store.parent()
    counts = store.region_counts()
    images, annotations = [], []
    first = 0
    for image, image_id in enumerate(store.image_ids):
        path = os.path.join(dataset_root, image_id) if dataset_root is not None else None
        if path is not None and not os.path.isfile(path) and split_member_path(path) is None:  # a file or a shard member
            raise FileNotFoundError(f"--dataset-root {dataset_root} has no image {image_id!r} of the store")
        height, width = (int(v) for v in store.image_sizes()[image])
        images.append({"id": image + 1, "file_name": image_id, "width": width, "height": height})
        count = int(counts[image])
        grid_masks = store.masks(np.arange(first, first + count)) if count and _has_masks(store, first) else None
        for k in range(count):
            region = first + k
            x1, y1, x2, y2 = (float(v) for v in boxes[region])
            annotation = {"id": region + 1, "image_id": image + 1, "category_id": CATEGORY["id"],
                          "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0,
                          "depth": int(depth[region]),
                          "parent": int(first + parent[region] + 1) if parent[region] >= 0 else -1,
                          "score": 1.0}
            if grid_masks is not None:
                cell = store.cell(image)
                pixels = patch_mask_to_pixels(grid_masks[k], cell, (height, width))
                annotation["claid_mask"] = {"grid": list(grid_masks[k].shape),
                                            "cell": [float(cell[0]), float(cell[1])],
                                            "counts": encode_mask(grid_masks[k])["counts"]}
            else:
                pixels = np.zeros((height, width), dtype=bool)
                pixels[int(np.floor(y1)):int(np.ceil(y2)), int(np.floor(x1)):int(np.ceil(x2))] = True
            annotation["segmentation"] = encode_mask(pixels)
            annotation["area"] = float(pixels.sum())
            annotations.append(annotation)
        first += count
    return {"info": {"description": "claid regions", "claid_store": str(store.store_dir),
                     "dataset_root": root},
            "licenses": [], "images": images, "annotations": annotations, "categories": [CATEGORY]}


def _has_masks(store, region: int) -> bool:
    """Whether the region was stored with a mask (a damaged mask raises, it is not a box)."""
    shard, row, image = store._locate(int(region))
    return store._grids[image] is not None and int(shard.regions["mask_length"][row]) > 0


def export_coco(store_dir: str, out: str, dataset_root: str | None = None) -> dict:
    """Write ``store_dir``'s regions to ``out`` as COCO JSON (atomically); returns the counts."""
    from claid.artifacts import DamagedArtifactError, atomic_write_json
    from claid.store import RegionStore
    from claid.store.integrity import verify_store

    check = verify_store(store_dir)  # checksums and values: nothing damaged is exported
    if not check.ok:
        name, problems = next(iter(check.damaged.items()))
        raise DamagedArtifactError(f"{store_dir}: {len(check.damaged)} damaged shard(s), e.g. {name}: "
                                   f"{problems[0]} (python -m claid verify {store_dir} lists them; "
                                   "a run re-extracts them)")
    coco = store_to_coco(RegionStore.open(store_dir), dataset_root)
    atomic_write_json(out, coco)
    return {"images": len(coco["images"]), "annotations": len(coco["annotations"])}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="claid export-coco",
                                     description="a region store as a COCO dataset JSON")
    parser.add_argument("store", help="a region store (outputs/cache/regions-<hash>)")
    parser.add_argument("out", help="the COCO JSON to write")
    parser.add_argument("--dataset-root", default=None,
                        help="folder the image ids are relative to (checked; recorded in info)")
    args = parser.parse_args(argv)
    try:
        counts = export_coco(args.store, args.out, args.dataset_root)
    except (ValueError, FileNotFoundError, OSError) as err:
        sys.exit(f"error: {err}")
    print(f"wrote {args.out}: {counts['images']} images, {counts['annotations']} regions")


if __name__ == "__main__":
    main()
