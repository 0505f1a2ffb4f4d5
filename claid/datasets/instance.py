"""Instance-160 and Instance-335 in the layout of the paper authors' lab.

Layout::

    <root>/Images/<sequence>/<sequence>_<frame>.jpg
    <root>/bbox/**.txt           Instance-160: "<frame name> x y w h" a line
    <root>/merge_bbox/**.txt     Instance-335: same format

``<frame name>`` is the image's file name with or without its extension.
One query per sequence: a frame and its box; the positives are the other
frames of that sequence; query frames leave the database (lab protocol,
mAP-50/100/all). The published query list is not part of the download: by
default the first frame (sorted by name) of each sequence is its query;
``query_list`` names a text file (one frame name or image path a line) to use
another choice. Either way the choice is recorded in the protocol.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from claid.datasets.boxes import union_box, xywh_to_xyxy
from claid.datasets.files import DatasetFormatError, index_by_stem, missing, require
from claid.datasets.protocol import make_protocol
from claid.structures import Benchmark, Query

SOURCES = {
    "instance160": "the CLAID authors' lab (Wan-Lei Zhao, Xiamen University); see the paper's "
    "Instance-160 reference",
    "instance335": "https://drive.google.com/file/d/1ZxVUO3uInFqiFzXfuokQxalwMl1fEDgN "
    "(link in the CLAID paper)",
}
BOX_FOLDERS = {"instance160": "bbox", "instance335": "merge_bbox"}


def _layout(box_folder: str) -> str:
    return (
        "Images/<sequence>/<sequence>_<frame>.jpg\n"
        f"{box_folder}/**.txt      lines '<frame name> x y w h'\n"
        "<query_list>             optional: one query frame a line"
    )


def read_box_files(folder: Path, stems: dict[str, str]) -> dict[str, np.ndarray]:
    """Image id -> (K, 4) float32 x1 y1 x2 y2 from every ``<frame> x y w h`` line of
    every .txt under ``folder``. A frame with no image is an error naming file:line."""
    boxes: dict[str, list] = defaultdict(list)
    for path in sorted(folder.rglob("*.txt")):
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                where = f"{path}:{lineno}"
                if len(parts) != 5:
                    raise DatasetFormatError(f"{where}: expected '<frame name> x y w h'")
                stem = Path(parts[0]).stem if Path(parts[0]).suffix else parts[0]
                image = stems.get(Path(stem).name)
                if image is None:
                    raise DatasetFormatError(f"{where}: frame {parts[0]!r} has no image")
                try:
                    xywh = [float(v) for v in parts[1:]]
                except ValueError as err:
                    raise DatasetFormatError(f"{where}: x y w h must be numbers") from err
                if xywh[2] <= 0 or xywh[3] <= 0:
                    raise DatasetFormatError(f"{where}: empty box (w or h <= 0)")
                boxes[image].append(xywh)
    return {k: xywh_to_xyxy(np.asarray(v)) for k, v in boxes.items()}


def load_instance(
    root: str | os.PathLike,
    *,
    name: str,
    query: str = "crop",
    query_list: str | None = None,
) -> Benchmark:
    """Instance-160 or Instance-335 (layout in the module docstring).

    Args:
        root: dataset folder.
        name: "instance160" or "instance335".
        query: "crop" (the paper's text) or "pool" (the lab's code).
        query_list: text file (relative to root) with one query frame a line; None
            = the first frame of every sequence.
    """
    if name not in SOURCES:
        raise ValueError(f"name must be one of {sorted(SOURCES)}, got {name!r}")
    root = Path(root)
    source, layout = SOURCES[name], _layout(BOX_FOLDERS[name])
    require(root, name=name, source=source, layout=layout, kind="dir")
    require(root / "Images", name=name, source=source, layout=layout, kind="dir")
    box_dir = require(root / BOX_FOLDERS[name], name=name, source=source, layout=layout, kind="dir")
    stems = index_by_stem(root, "Images")
    if not stems:
        raise missing(
            name, root / "Images" / "<sequence>" / "<frame>.jpg", source=source, layout=layout
        )
    boxes = read_box_files(box_dir, stems)

    sequences: dict[str, list[str]] = defaultdict(list)
    for image in sorted(stems.values()):
        parts = image.split("/")
        if len(parts) != 3:
            raise DatasetFormatError(f"{name}: {image} is not Images/<sequence>/<frame>")
        sequences[parts[1]].append(image)

    if query_list is None:
        chosen = [frames[0] for _, frames in sorted(sequences.items())]
    else:
        list_path = require(root / query_list, name=name, source=source, layout=layout)
        chosen = []
        with open(list_path) as f:
            for lineno, line in enumerate(f, 1):
                entry = line.strip()
                if not entry:
                    continue
                image = stems.get(Path(entry).stem)
                if image is None:
                    raise DatasetFormatError(f"{list_path.name}:{lineno}: unknown frame {entry!r}")
                chosen.append(image)
    query_images = set(chosen)

    queries = []
    for image in chosen:
        if image not in boxes:
            raise DatasetFormatError(f"{name}: query frame {image} has no box in {box_dir.name}/")
        sequence = image.split("/")[1]
        queries.append(
            Query(
                image=image,
                # Several boxes on a query frame: the query covers them all.
                box=union_box(boxes[image]),
                positives=[i for i in sequences[sequence] if i not in query_images],
                qid=Path(image).stem,
                extra={"sequence": sequence},
            )
        )
    database = [i for i in sorted(stems.values()) if i not in query_images]
    return Benchmark(
        name=name,
        root=str(root),
        database=database,
        queries=queries,
        gt_boxes={i: boxes[i] for i in database if i in boxes},
        protocol=make_protocol(
            "lab",
            query=query,
            remove_queries_from_db=True,
            junk=False,
            query_frames=query_list or "first frame of each sequence",
            box_folder=BOX_FOLDERS[name],
        ),
    )


def load_instance160(
    root: str | os.PathLike, *, query: str = "crop", query_list: str | None = None
) -> Benchmark:
    """Instance-160 (160 queries, 11,885 images)."""
    return load_instance(root, name="instance160", query=query, query_list=query_list)


def load_instance335(
    root: str | os.PathLike, *, query: str = "crop", query_list: str | None = None
) -> Benchmark:
    """Instance-335 (335 queries)."""
    return load_instance(root, name="instance335", query=query, query_list=query_list)
