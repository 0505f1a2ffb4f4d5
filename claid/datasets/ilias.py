"""ILIAS / mini-ILIAS (Kordopatis-Zilos et al. 2025), read as the official downloads leave it.

Layouts found from the dataset root alone (recorded in the protocol as ``layout``):

download script (``download/download_ilias.sh``)::

    <root>/ilias_core/<instance>/query/Q<iii>_<yy>.jpg + Q<iii>_<yy>_bbox.txt
    <root>/ilias_core/<instance>/query/T<iii>.txt             text query
    <root>/ilias_core/<instance>/pos/P<iii>_<zz>.jpg + P<iii>_<zz>_bbox.txt
    <root>/yfcc100m/<shard>.tar                                YFCC100M, 100K images a shard
    <root>/image_ids/                                          the official id lists

Hugging Face release (``vrg-prague/ilias``, WebDataset shards, nothing extracted)::

    <root>/ilias-core-queries-img-000000.tar   <instance>/query/Q000_00.{jpg,bbox.json}
    <root>/ilias-core-db-000000.tar            <instance>/pos/P000_07.{jpg,bbox.json,download_url.txt}
    <root>/mini_ilias_yfcc100m-000000.tar ...  mini-ILIAS distractors

Boxes are ``x y w h`` (top-left corner, width, height), possibly several. Images
inside shards are read where they lie (claid/datasets/tar_shards.py). Positives of a
query are the positives of its instance; the database is every positive plus the
distractors (claid/datasets/ilias_distractors.py: ``distractors``, and
``distractor_ids`` for mini-ILIAS). A core-only run is asked for with
``distractors: null`` and recorded so. Scored as the official evaluation does:
AP@k over the first k (divided by min(k, |GT|)) with pooled ties.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from claid.datasets.boxes import union_box
from claid.datasets.files import DatasetFormatError, DatasetNotFoundError, require
from claid.datasets.ilias_core import core_items, core_layout, read_bbox_file
from claid.datasets.ilias_distractors import find_distractors
from claid.datasets.protocol import make_protocol
from claid.structures import Benchmark, Query

__all__ = ["load_ilias", "official_image_id", "read_bbox_file"]

QUERY_KINDS = ("all", "image", "text")
SOURCE = (
    "https://vrg.fel.cvut.cz/ilias_data/ (download/download_ilias.sh of ilias-vrg/ilias), "
    "or https://huggingface.co/datasets/vrg-prague/ilias; mini-ILIAS: "
    "dataset.distractor_ids=<mini_ilias_yfcc100m_ids.txt>"
)
LAYOUT = """\
ilias_core/<instance>/{query,pos}/*.jpg + *_bbox.txt, query/T<iii>.txt  (download script)
yfcc100m/<shard>.tar                                                   YFCC100M shards
or: ilias-core-queries-img-000000.tar, ilias-core-db-000000.tar,
    mini_ilias_yfcc100m-000000.tar ...                                 (Hugging Face)"""


def official_image_id(image_id: str) -> str:
    """The id the official ILIAS tools give a claid image id: ``<instance>/pos/P000_00.jpg``
    for a positive (folder or shard), ``<shard file name>/<key>`` for a distractor in a
    shard, the path under its folder for an extracted distractor."""
    if image_id.startswith("ilias_core/"):
        return image_id[len("ilias_core/") :]
    if ".tar/" in image_id:
        shard, key = image_id.split(".tar/", 1)
        name = PurePosixPath(shard).name
        return f"{key}.jpg" if name.startswith("ilias-core-") else f"{name}.tar/{key}"
    return image_id.split("/", 1)[-1]


def load_ilias(
    root: str | os.PathLike,
    *,
    distractors: str | None = "auto",
    distractor_ids: str | os.PathLike | None = None,
    queries: str = "all",
    query: str = "crop",
    k: int | Sequence[int] = 1000,
) -> Benchmark:
    """ILIAS image and/or text queries against positives plus distractors.

    Args:
        root: dataset folder, either official layout (module docstring).
        distractors: "auto" (``yfcc100m/``, else the ``*yfcc100m-*.tar`` shards of the
            root), a folder of shards or images, a shard-name prefix, or None for the
            core set only (recorded; scores are then not comparable).
        distractor_ids: a file of distractor ids to keep (mini-ILIAS:
            ``mini_ilias_yfcc100m_ids.txt``), "mini" (that list from ``image_ids/``,
            or the Hugging Face mini-ILIAS shards as they are), or None for all found.
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
    if distractors is None and distractor_ids is not None:
        raise ValueError("ilias: distractor_ids needs distractors (got distractors=null)")
    root = Path(root)
    require(root, name="ilias", source=SOURCE, layout=LAYOUT, kind="dir")
    layout = core_layout(root)
    if layout is None:
        raise DatasetNotFoundError(
            f"ilias: {root} holds neither ilias_core/<instance>/ (download script) nor "
            f"ilias-core-db-*.tar (Hugging Face); get it from {SOURCE}"
        )
    items = core_items(root, layout)
    positives: dict[str, list[str]] = {}
    gt_boxes = {}
    for item in items:
        if item.kind == "pos":
            positives.setdefault(item.instance, []).append(item.image)
            if item.boxes is not None:
                gt_boxes[item.image] = item.boxes
    wanted = {"all": ("query", "text"), "image": ("query",), "text": ("text",)}[queries]
    found: list[Query] = []
    for item in items:
        if item.kind not in wanted:
            continue
        pos = positives.get(item.instance)
        if not pos:
            raise DatasetFormatError(f"ilias: instance {item.instance} has no positives")
        extra = {"instance": item.instance, "official_id": item.official_id}
        if item.kind == "query":
            # Several boxes: the query covers all of them; each is kept in extra.
            found.append(Query(image=item.image, box=union_box(item.boxes), positives=list(pos),
                               qid=f"{item.instance}/{item.stem}",
                               extra={**extra, "boxes": item.boxes.tolist()}))  # fmt: skip
        else:
            found.append(Query(image=None, text=item.text, positives=list(pos),
                               qid=f"{item.instance}/{item.stem}", extra=extra))  # fmt: skip
    if not found:
        raise DatasetFormatError(f"ilias: no {queries} queries in {root} ({layout} layout)")
    distractor_list: list[str] = []
    record: dict = {"distractors": None, "core_only": True}
    if distractors is not None:
        distractor_list, record = find_distractors(root, distractors, distractor_ids)
    positives_all = [image for pos in positives.values() for image in pos]
    return Benchmark(
        name="ilias",
        root=str(root),
        database=positives_all + distractor_list,
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
            layout={"folder": "download script (ilias_core/)", "shards": "Hugging Face shards"}[layout],
            n_distractors=len(distractor_list),
            **record,
        ),
    )
