"""ILIAS / mini-ILIAS (Kordopatis-Zilos et al. 2025).

Layout (as the ILIAS download script leaves it)::

    <root>/ilias_core/<instance>/query/Q<iii>_<yy>.jpg + Q<iii>_<yy>_bbox.txt
    <root>/ilias_core/<instance>/query/T<iii>.txt             text query
    <root>/ilias_core/<instance>/pos/P<iii>_<zz>.jpg + P<iii>_<zz>_bbox.txt
    <root>/<distractors>/**.jpg                                YFCC100M distractors

``_bbox.txt`` files hold ``x y w h`` lines (top-left corner, width, height),
possibly several. Positives of a query are the ``pos/`` images of its
instance; the database is every positive plus the distractors. Scored with
GLDv2-style AP@1000 (divided by min(k, |GT|)). Without distractors the
benchmark is only the core set, which must be asked for explicitly
(``distractors: null``) and is recorded in the protocol.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from claid.datasets.boxes import union_box, xywh_to_xyxy
from claid.datasets.files import DatasetFormatError, list_images, missing, require
from claid.datasets.protocol import make_protocol
from claid.structures import Benchmark, Query

QUERY_KINDS = ("all", "image", "text")
SOURCE = (
    "https://vrg.fel.cvut.cz/ilias_data/ (ilias_core.tar; YFCC100M shards under yfcc100m/), "
    "or https://huggingface.co/datasets/vrg-prague/ilias; mini-ILIAS: the 5M-distractor subset"
)
LAYOUT = """\
ilias_core/<instance>/query/Q<iii>_<yy>.jpg + Q<iii>_<yy>_bbox.txt   'x y w h' lines
ilias_core/<instance>/query/T<iii>.txt                               text query
ilias_core/<instance>/pos/P<iii>_<zz>.jpg + P<iii>_<zz>_bbox.txt
<distractors>/**.jpg                                                 YFCC100M images"""


def read_bbox_file(path: Path) -> np.ndarray:
    """(K, 4) float32 x1 y1 x2 y2 from an ILIAS ``x y w h`` bbox file."""
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.replace(",", " ").split()
            if not parts:
                continue
            if len(parts) != 4:
                raise DatasetFormatError(f"{path}:{lineno}: expected 'x y w h'")
            try:
                rows.append([float(v) for v in parts])
            except ValueError as err:
                raise DatasetFormatError(f"{path}:{lineno}: not four numbers") from err
    if not rows:
        raise DatasetFormatError(f"{path}: no box")
    return xywh_to_xyxy(np.asarray(rows))


def _photos(folder: Path) -> list[str]:
    """Images in ``folder``, without box renderings (``*_bbox.png``, which the
    ILIAS README lists beside some positives)."""
    return [p for p in list_images(folder) if not Path(p).stem.endswith("_bbox")]


def load_ilias(
    root: str | os.PathLike,
    *,
    distractors: str | None = "yfcc100m",
    queries: str = "all",
    query: str = "crop",
    k: int | Sequence[int] = 1000,
) -> Benchmark:
    """ILIAS image and/or text queries against positives plus distractors.

    Args:
        root: dataset folder (layout in the module docstring).
        distractors: folder of distractor images relative to root, or None for
            the core set only (recorded; scores are then not comparable).
        queries: "image" (instance-to-instance, I2I), "text" (text-to-instance,
            T2I, ``Query.text``) or "all"; the paper's Table X scores I2I and T2I apart.
        query: how image-query boxes are described: "crop" or "pool".
        k: ranking depth(s) of AP@k, e.g. 1000 or [50, 100, 1000] (Table X).
    """
    if queries not in QUERY_KINDS:
        raise ValueError(f"ilias queries must be one of {QUERY_KINDS}, got {queries!r}")
    ks = [int(k)] if isinstance(k, int | float | str) else [int(v) for v in k]
    if not ks or min(ks) < 1:
        raise ValueError(f"ilias k must be one or more positive depths, got {k!r}")
    root = Path(root)
    require(root, name="ilias", source=SOURCE, layout=LAYOUT, kind="dir")
    core = require(root / "ilias_core", name="ilias", source=SOURCE, layout=LAYOUT, kind="dir")
    instances = sorted(p for p in core.iterdir() if p.is_dir())
    if not instances:
        raise missing("ilias", core / "<instance>", source=SOURCE, layout=LAYOUT)

    found: list[Query] = []
    positives_all: list[str] = []
    gt_boxes: dict[str, np.ndarray] = {}
    for inst in instances:
        rel = f"ilias_core/{inst.name}"
        pos = [f"{rel}/pos/{p}" for p in _photos(inst / "pos")] if (inst / "pos").is_dir() else []
        if not pos:
            raise DatasetFormatError(f"ilias: {inst} has no positives under pos/")
        for image in pos:
            bbox = (root / image).with_name(Path(image).stem + "_bbox.txt")
            if bbox.is_file():
                gt_boxes[image] = read_bbox_file(bbox)
        positives_all.extend(pos)
        qdir = inst / "query"
        if not qdir.is_dir():
            raise DatasetFormatError(f"ilias: {inst} has no query/ folder")
        for qimage in _photos(qdir) if queries in ("image", "all") else []:
            image = f"{rel}/query/{qimage}"
            bbox_path = (root / image).with_name(Path(qimage).stem + "_bbox.txt")
            if not bbox_path.is_file():
                raise DatasetFormatError(f"ilias: query {image} has no {bbox_path.name}")
            boxes = read_bbox_file(bbox_path)
            found.append(
                Query(
                    image=image,
                    # Several boxes: the query covers all of them; each is kept in extra.
                    box=union_box(boxes),
                    positives=list(pos),
                    qid=f"{inst.name}/{Path(qimage).stem}",
                    extra={"instance": inst.name, "boxes": boxes.tolist()},
                )
            )
        if queries in ("text", "all"):
            for tpath in sorted(qdir.glob("T*.txt")):
                text = tpath.read_text(encoding="utf-8").strip()
                if not text:
                    raise DatasetFormatError(f"ilias: text query {tpath} is empty")
                found.append(
                    Query(
                        image=None,
                        text=text,
                        positives=list(pos),
                        qid=f"{inst.name}/{tpath.stem}",
                        extra={"instance": inst.name},
                    )
                )

    if not found:
        raise DatasetFormatError(f"ilias: no {queries} queries under {core}/<instance>/query/")
    distractor_ids: list[str] = []
    if distractors is not None:
        ddir = root / distractors
        if not ddir.is_dir():
            raise missing(
                "ilias",
                ddir,
                source=SOURCE,
                layout=LAYOUT + "\n(set dataset.distractors=null to run on the core set only)",
            )
        distractor_ids = [f"{distractors}/{rel}" for rel in list_images(ddir)]
    return Benchmark(
        name="ilias",
        root=str(root),
        database=positives_all + distractor_ids,
        queries=found,
        gt_boxes=gt_boxes,
        protocol=make_protocol(
            "gldv2",
            query=query,
            remove_queries_from_db=True,
            junk=False,
            k=ks,
            # the official evaluation: scikit-learn's AP (pooled ties), |GT| = every positive
            ties="pooled",
            n_relevant="ground_truth",
            query_kinds=queries,
            distractors=distractors,
            n_distractors=len(distractor_ids),
        ),
    )
