"""Oxford5k and Paris6k with their original ("classic") ground truth.

Layout::

    <root>/jpg/**/<name>.jpg             all images (Paris's landmark sub-folders
                                         may be kept or flattened)
    <root>/gt_files/<q>_good.txt         one image name (no extension) a line
    <root>/gt_files/<q>_ok.txt
    <root>/gt_files/<q>_junk.txt
    <root>/gt_files/<q>_query.txt        "<image> x1 y1 x2 y2"

``<q>`` is e.g. ``all_souls_1``; Oxford's query lines prefix the image name
with ``oxc1_``. The query box is x1 y1 x2 y2 (reading it as x y w h is a known
bug that inflates scores). Protocol: positives good + ok, junk dropped from the
ranking, query cropped to its box, the query image stays in the database,
trapezoid AP over 55 queries. Paris6k ships 20 unreadable images: they are
reported (``protocol["skipped"]``) and left out.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from claid.datasets.boxes import check_box
from claid.datasets.files import (
    DatasetFormatError,
    index_by_stem,
    missing,
    require,
    split_unreadable,
)
from claid.datasets.protocol import make_protocol
from claid.structures import Benchmark, Query

log = logging.getLogger(__name__)

SOURCES = {
    "oxford5k": "https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/ "
    "(oxbuild_images.tgz, gt_files_170407.tgz)",
    "paris6k": "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/ "
    "(paris_1.tgz, paris_2.tgz, paris_120310.tgz)",
}
LAYOUT = """\
jpg/**/<name>.jpg              all images
gt_files/<q>_good.txt          image names, one a line
gt_files/<q>_ok.txt
gt_files/<q>_junk.txt
gt_files/<q>_query.txt         <image> x1 y1 x2 y2"""
_QUERY_FILE = re.compile(r"(.+)_query\.txt")


def _names(path: Path) -> list[str]:
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def _resolve(name: str, stems: dict[str, str], where: str) -> str:
    for candidate in (name, name.removeprefix("oxc1_")):
        if candidate in stems:
            return stems[candidate]
    raise DatasetFormatError(f"{where}: image {name!r} is not under jpg/")


def load_oxford_paris(
    root: str | os.PathLike, *, name: str, query: str = "crop", skip_unreadable: bool = True
) -> Benchmark:
    """Oxford5k or Paris6k with the classic ``gt_files`` ground truth.

    Args:
        root: dataset folder (layout in the module docstring).
        name: "oxford5k" or "paris6k".
        query: how query boxes are described: "crop" (the protocol) or "pool".
        skip_unreadable: check every image header and leave out (and report)
            broken files; False trusts the folder.
    """
    if name not in SOURCES:
        raise ValueError(f"classic dataset must be one of {sorted(SOURCES)}, got {name!r}")
    root = Path(root)
    source = SOURCES[name]
    require(root, name=name, source=source, layout=LAYOUT, kind="dir")
    gt_dir = require(root / "gt_files", name=name, source=source, layout=LAYOUT, kind="dir")
    require(root / "jpg", name=name, source=source, layout=LAYOUT, kind="dir")
    stems = index_by_stem(root, "jpg")
    qnames = sorted(m.group(1) for p in gt_dir.iterdir() if (m := _QUERY_FILE.fullmatch(p.name)))
    if not qnames:
        raise missing(name, gt_dir / "<q>_query.txt", source=source, layout=LAYOUT)

    database = sorted(stems.values())
    skipped: list[tuple[str, str]] = []
    if skip_unreadable:
        database, skipped = split_unreadable(root, database)
        for image_id, reason in skipped:
            log.warning("%s: skipping unreadable image %s (%s)", name, image_id, reason)
    dropped = {i for i, _ in skipped}

    queries = []
    for q in qnames:
        qfile = gt_dir / f"{q}_query.txt"
        lines = _names(qfile)
        if len(lines) != 1 or len(lines[0].split()) != 5:
            raise DatasetFormatError(f"{qfile.name}:1: expected '<image> x1 y1 x2 y2'")
        image_name, *coords = lines[0].split()
        image = _resolve(image_name, stems, f"{qfile.name}:1")
        if image in dropped:
            raise DatasetFormatError(f"{qfile.name}:1: query image {image} is unreadable")
        lists = {}
        for kind in ("good", "ok", "junk"):
            path = require(gt_dir / f"{q}_{kind}.txt", name=name, source=source, layout=LAYOUT)
            lists[kind] = [
                _resolve(n, stems, f"{path.name}:{i}") for i, n in enumerate(_names(path), 1)
            ]
        queries.append(
            Query(
                image=image,
                box=check_box(coords, None, where=f"{qfile.name}:1"),
                positives=[i for i in lists["good"] + lists["ok"] if i not in dropped],
                junk=[i for i in lists["junk"] if i not in dropped],
                qid=q,
                extra={"good": lists["good"], "ok": lists["ok"]},
            )
        )
    return Benchmark(
        name=name,
        root=str(root),
        database=database,
        queries=queries,
        protocol=make_protocol(
            "trapezoid",
            query=query,
            remove_queries_from_db=False,
            junk=True,
            box_format="x1y1x2y2",
            ground_truth=str(gt_dir),
            skipped=[i for i, _ in skipped],
        ),
    )


def load_oxford5k(
    root: str | os.PathLike, *, query: str = "crop", skip_unreadable: bool = True
) -> Benchmark:
    """Oxford5k (5,063 images, 55 queries), classic protocol."""
    return load_oxford_paris(root, name="oxford5k", query=query, skip_unreadable=skip_unreadable)


def load_paris6k(
    root: str | os.PathLike, *, query: str = "crop", skip_unreadable: bool = True
) -> Benchmark:
    """Paris6k (6,412 files of which 20 are broken, 55 queries), classic protocol."""
    return load_oxford_paris(root, name="paris6k", query=query, skip_unreadable=skip_unreadable)
