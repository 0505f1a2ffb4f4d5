"""COCO for the detector's recall curve (no retrieval queries).

``coco_val2017`` (what the paper's recall code uses)::

    <root>/val2017/<id>.jpg
    <root>/annotations/instances_val2017.json    crowd objects kept by default

``coco20k`` (19,817 train2014 images, the list LOST and TokenCut ship)::

    <root>/train2014/COCO_train2014_<id>.jpg
    <root>/annotations/instances_train2014.json
    <root>/coco_20k_filenames.txt                "train2014/COCO_train2014_<id>.jpg" a line

The 20k file list is pinned by md5. Its annotations (crowd objects dropped) are
written once to ``cache_dir`` as a COCO-format file, named by the list's md5
and the size of the source annotations, and returned as ``gt_masks_file``.
Image ids are COCO ``file_name`` values, relative to the image folder (the
Benchmark's root), so they index the annotation file directly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from claid.artifacts import atomic_write_bytes
from claid.datasets.boxes import xywh_to_xyxy
from claid.datasets.files import DatasetFormatError, md5sum, missing, require
from claid.datasets.protocol import make_protocol
from claid.structures import Benchmark

SOURCE = "https://cocodataset.org/#download (images and annotations_trainval{2014,2017}.zip)"
COCO20K_LIST_SOURCE = "https://github.com/valeoai/LOST/blob/master/datasets/coco_20k_filenames.txt"
#: md5 of LOST's / TokenCut's coco_20k_filenames.txt (PROTOCOLS.md sec. 3).
COCO20K_LIST_MD5 = "133cea5ffcea93dccbaeb62c38b24e7c"
VAL2017_LAYOUT = """\
val2017/<id>.jpg
annotations/instances_val2017.json"""
COCO20K_LAYOUT = """\
train2014/COCO_train2014_<id>.jpg
annotations/instances_train2014.json
coco_20k_filenames.txt               (from LOST: datasets/coco_20k_filenames.txt)"""


def _read_annotations(path: Path) -> dict:
    with open(path) as f:
        data = json.load(f)
    for key in ("images", "annotations"):
        if key not in data:
            raise DatasetFormatError(f"{path}: not a COCO instances file (no {key!r})")
    return data


def boxes_by_file(data: dict, *, include_crowd: bool) -> dict[str, np.ndarray]:
    """COCO ``file_name`` -> (K, 4) float32 x1 y1 x2 y2 boxes of its objects
    (COCO ``bbox`` is x y w h in pixels)."""
    names = {img["id"]: img["file_name"] for img in data["images"]}
    rows: dict[str, list] = {}
    for ann in data["annotations"]:
        if not include_crowd and ann.get("iscrowd", 0):
            continue
        rows.setdefault(names[ann["image_id"]], []).append(ann["bbox"])
    return {k: xywh_to_xyxy(np.asarray(v)) for k, v in rows.items()}


def load_coco_val2017(
    root: str | os.PathLike,
    *,
    annotation_file: str = "annotations/instances_val2017.json",
    include_crowd: bool = True,
) -> Benchmark:
    """COCO val2017 (5,000 images) for the detector recall curve.

    Args:
        root: COCO folder (layout in the module docstring).
        annotation_file: relative to root.
        include_crowd: count crowd objects as ground truth (the paper's code does).
    """
    root = Path(root)
    require(root, name="coco_val2017", source=SOURCE, layout=VAL2017_LAYOUT, kind="dir")
    images_dir = require(
        root / "val2017", name="coco_val2017", source=SOURCE, layout=VAL2017_LAYOUT, kind="dir"
    )
    ann_path = require(
        root / annotation_file, name="coco_val2017", source=SOURCE, layout=VAL2017_LAYOUT
    )
    data = _read_annotations(ann_path)
    database = sorted(img["file_name"] for img in data["images"])
    absent = [f for f in database if not (images_dir / f).is_file()]
    if absent:
        raise missing(
            "coco_val2017",
            images_dir / absent[0],
            source=SOURCE,
            layout=VAL2017_LAYOUT + f"\n({len(absent)} of {len(database)} images are missing)",
        )
    return Benchmark(
        name="coco_val2017",
        root=str(images_dir),
        database=database,
        queries=[],
        gt_boxes=boxes_by_file(data, include_crowd=include_crowd),
        protocol=make_protocol(
            "detection",
            query="full",
            remove_queries_from_db=False,
            junk=False,
            include_crowd=include_crowd,
            annotation_file=str(ann_path),
        ),
        gt_masks_file=str(ann_path),
    )


def load_coco20k(
    root: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike,
    file_list: str = "coco_20k_filenames.txt",
    annotation_file: str = "annotations/instances_train2014.json",
    check_md5: bool = True,
) -> Benchmark:
    """COCO 20k (19,817 train2014 images, crowd objects dropped).

    Args:
        root: COCO folder (layout in the module docstring).
        cache_dir: where the 20k subset of the annotations is written once.
        file_list: the 20k list, relative to root.
        annotation_file: relative to root.
        check_md5: refuse a file list whose md5 is not the published one.
    """
    root = Path(root)
    layout = COCO20K_LAYOUT
    require(root, name="coco20k", source=SOURCE, layout=layout, kind="dir")
    images_dir = require(
        root / "train2014", name="coco20k", source=SOURCE, layout=layout, kind="dir"
    )
    list_path = require(root / file_list, name="coco20k", source=COCO20K_LIST_SOURCE, layout=layout)
    ann_path = require(root / annotation_file, name="coco20k", source=SOURCE, layout=layout)
    digest = md5sum(list_path)
    if check_md5 and digest != COCO20K_LIST_MD5:
        raise DatasetFormatError(
            f"{list_path}: md5 {digest} is not the published {COCO20K_LIST_MD5}; get the list "
            f"from {COCO20K_LIST_SOURCE} (or set check_md5: false to use another list knowingly)"
        )
    with open(list_path) as f:
        names = [Path(line.strip()).name for line in f if line.strip()]
    if len(set(names)) != len(names):
        raise DatasetFormatError(f"{list_path}: a file name is listed twice")
    absent = [n for n in names if not (images_dir / n).is_file()]
    if absent:
        raise missing(
            "coco20k",
            images_dir / absent[0],
            source=SOURCE,
            layout=layout + f"\n({len(absent)} of {len(names)} listed images are missing)",
        )

    cache_dir = Path(cache_dir)
    subset_path = cache_dir / f"coco20k-{digest[:12]}-{ann_path.stat().st_size}.json"
    if not subset_path.is_file():
        data = _read_annotations(ann_path)
        wanted = set(names)
        images = [img for img in data["images"] if img["file_name"] in wanted]
        unknown = wanted - {img["file_name"] for img in images}
        if unknown:
            raise DatasetFormatError(
                f"{ann_path.name} has no entry for {len(unknown)} listed images, "
                f"e.g. {sorted(unknown)[0]}"
            )
        ids = {img["id"] for img in images}
        subset = {key: value for key, value in data.items() if key not in ("images", "annotations")}
        subset["images"] = images
        subset["annotations"] = [
            a for a in data["annotations"] if a["image_id"] in ids and not a.get("iscrowd", 0)
        ]
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(subset_path, json.dumps(subset).encode())  # never half a file
    data = _read_annotations(subset_path)
    return Benchmark(
        name="coco20k",
        root=str(images_dir),
        database=names,
        queries=[],
        gt_boxes=boxes_by_file(data, include_crowd=False),
        protocol=make_protocol(
            "detection",
            query="full",
            remove_queries_from_db=False,
            junk=False,
            include_crowd=False,
            file_list=str(list_path),
            file_list_md5=digest,
            annotation_file=str(ann_path),
        ),
        gt_masks_file=str(subset_path),
    )
