"""Oxford5k and Paris6k with their original ("classic") ground truth.

Layout (claid's names; the VGG archives', revisitop's / cirtorch's and the lab's
``images/`` + ``gt/`` are accepted too, see ``oxford_paris_layouts``)::

    <root>/jpg/**/<name>.jpg             all images (Paris's landmark sub-folders
                                         may be kept or flattened)
    <root>/gt_files/<q>_good.txt         one image name (no extension) a line
    <root>/gt_files/<q>_ok.txt
    <root>/gt_files/<q>_junk.txt
    <root>/gt_files/<q>_query.txt        "<image> x1 y1 x2 y2"

``<q>`` is e.g. ``all_souls_1``; Oxford's query lines prefix the image name
with ``oxc1_``. cirtorch's ``gnd_oxford5k.pkl`` / ``gnd_paris6k.pkl`` hold the same
ground truth as ``imlist``, ``qimlist`` and per query ``bbx``, ``ok`` (good + ok) and
``junk`` as indices into ``imlist``; its query ids are the query images' names. The query box is x1 y1 x2 y2 (reading it as x y w h is a known
bug that inflates scores). Protocol: positives good + ok, junk dropped from the
ranking, query cropped to its box, the query image stays in the database,
trapezoid AP over 55 queries. Paris6k ships 20 unreadable images: they are
reported (``protocol["skipped"]``) and left out.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path

import numpy as np

from claid.datasets.boxes import check_box
from claid.datasets.files import (
    DatasetFormatError,
    index_by_stem,
    missing,
    require,
    split_unreadable,
)
from claid.datasets.oxford_paris_layouts import accepted_layouts, find_layout
from claid.datasets.protocol import make_protocol
from claid.datasets.safe_pickle import load_ground_truth_pickle
from claid.structures import Benchmark, Query

log = logging.getLogger(__name__)

SOURCES = {
    "oxford5k": "https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/ "
    "(oxbuild_images.tgz, gt_files_170407.tgz)",
    "paris6k": "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/ "
    "(paris_1.tgz, paris_2.tgz, paris_120310.tgz)",
}
_QUERY_FILE = re.compile(r"(.+)_query\.txt")


def _names(path: Path) -> list[str]:
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def _resolve(name: str, stems: dict[str, str], where: str, images: str) -> str:
    for candidate in (name, name.removeprefix("oxc1_")):
        if candidate in stems:
            return stems[candidate]
    raise DatasetFormatError(f"{where}: image {name!r} is not under {images}/")


def _text_queries(gt_dir: Path, stems: dict[str, str], images: str, layout: str, **where) -> list[Query]:
    """Queries of the classic ``<q>_{good,ok,junk,query}.txt`` files (unreadable
    images not yet left out)."""
    qnames = sorted(m.group(1) for p in gt_dir.iterdir() if (m := _QUERY_FILE.fullmatch(p.name)))
    if not qnames:
        raise missing(where["name"], gt_dir / "<q>_query.txt", source=where["source"], layout=layout)
    queries = []
    for q in qnames:
        qfile = gt_dir / f"{q}_query.txt"
        lines = _names(qfile)
        if len(lines) != 1 or len(lines[0].split()) != 5:
            raise DatasetFormatError(f"{qfile.name}:1: expected '<image> x1 y1 x2 y2'")
        image_name, *coords = lines[0].split()
        lists = {}
        for kind in ("good", "ok", "junk"):
            path = require(gt_dir / f"{q}_{kind}.txt", layout=layout, **where)
            lists[kind] = [
                _resolve(n, stems, f"{path.name}:{i}", images) for i, n in enumerate(_names(path), 1)
            ]
        queries.append(
            Query(
                image=_resolve(image_name, stems, f"{qfile.name}:1", images),
                box=check_box(coords, None, where=f"{qfile.name}:1"),
                positives=lists["good"] + lists["ok"],
                junk=lists["junk"],
                qid=q,
                extra={"good": lists["good"], "ok": lists["ok"]},
            )
        )
    return queries


def _pickle_queries(path: Path, stems: dict[str, str], images: str) -> list[Query]:
    """Queries of cirtorch's classic ``gnd_<name>.pkl`` (``ok`` = good + ok)."""
    cfg = load_ground_truth_pickle(path)  # plain data only (safe_pickle.py)
    for key in ("imlist", "qimlist", "gnd"):
        if key not in cfg:
            raise DatasetFormatError(f"{path}: no {key!r} entry (keys: {sorted(cfg)})")
    if len(cfg["gnd"]) != len(cfg["qimlist"]):
        raise DatasetFormatError(f"{path}: {len(cfg['gnd'])} gnd entries for {len(cfg['qimlist'])} queries")
    imlist = [_resolve(n, stems, f"{path.name}: imlist", images) for n in cfg["imlist"]]
    queries = []
    for i, (qname, g) in enumerate(zip(cfg["qimlist"], cfg["gnd"])):
        where = f"{path.name}: gnd[{i}]"
        missing_keys = [k for k in ("bbx", "ok", "junk") if k not in g]
        if missing_keys:
            raise DatasetFormatError(f"{where}: no {missing_keys[0]!r} (a classic gnd has bbx, ok, junk)")
        sets = {}
        for k in ("ok", "junk"):
            idx = np.asarray(g[k], dtype=np.int64).ravel()
            if idx.size and (idx.min() < 0 or idx.max() >= len(imlist)):
                raise DatasetFormatError(f"{where}.{k}: index outside imlist (0..{len(imlist) - 1})")
            sets[k] = [imlist[j] for j in idx.tolist()]
        queries.append(
            Query(
                image=_resolve(str(qname), stems, f"{path.name}: qimlist[{i}]", images),
                box=check_box(np.asarray(g["bbx"]).ravel(), None, where=f"{where}.bbx"),
                positives=sets["ok"],
                junk=sets["junk"],
                qid=str(qname),
                extra={"ok": sets["ok"]},
            )
        )
    qids = [q.qid for q in queries]
    if len(set(qids)) != len(qids):
        queries = [dataclasses.replace(q, qid=f"{q.qid}_{i}") for i, q in enumerate(queries)]
    return queries


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
    layout_text = accepted_layouts(name, text=True)
    require(root, name=name, source=source, layout=layout_text, kind="dir")
    layout = find_layout(root, name, text=True, source=source)
    stems = index_by_stem(root, layout.images)
    if layout.kind == "gt_files":
        queries = _text_queries(
            layout.ground_truth, stems, layout.images, layout_text, name=name, source=source
        )
    else:
        queries = _pickle_queries(layout.ground_truth, stems, layout.images)

    database = sorted(stems.values())
    skipped: list[tuple[str, str]] = []
    if skip_unreadable:
        database, skipped = split_unreadable(root, database)
        for image_id, reason in skipped:
            log.warning("%s: skipping unreadable image %s (%s)", name, image_id, reason)
    dropped = {i for i, _ in skipped}
    for q in queries:
        if q.image in dropped:
            raise DatasetFormatError(f"{layout.ground_truth.name}: query {q.qid}'s image {q.image} is unreadable")
    queries = [
        dataclasses.replace(
            q,
            positives=[i for i in q.positives if i not in dropped],
            junk=[i for i in q.junk if i not in dropped],
        )
        for q in queries
    ]
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
            ground_truth=str(layout.ground_truth),
            layout=layout.describe(root),
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
