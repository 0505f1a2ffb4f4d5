"""Revisited Oxford and Paris (ROxford5k, RParis6k), Radenovic et al. 2018.

Layout (as revisitop's download script leaves it)::

    <root>/gnd_roxford5k.pkl     (gnd_rparis6k.pkl)
    <root>/jpg/<name>.jpg        every database and query image

The images may also lie in the VGG archives' folders (``oxbuild_images/``,
``paris/<landmark>/``) or a lab copy's ``images/``, and the pickle under ``gt/``
(``oxford_paris_layouts`` lists every accepted layout).

The pickle (read as plain data only, never running code: :mod:`claid.datasets.safe_pickle`) holds ``imlist`` and ``qimlist`` (image names without extension)
and ``gnd``: per query ``bbx`` (x1 y1 x2 y2 in pixels) and ``easy``, ``hard``,
``junk``: 0-based indices into ``imlist``. The query images are not in
``imlist``: they are cropped to their box and are not part of the database.
Each query carries ``extra={"easy", "hard", "junk"}`` (image ids); the
evaluator derives the Easy / Medium / Hard settings from them. ``positives``
holds the Medium positives (easy + hard) and ``junk`` the Medium junk.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from claid.datasets.boxes import check_box
from claid.datasets.files import DatasetFormatError, index_by_stem, require
from claid.datasets.oxford_paris_layouts import accepted_layouts, find_layout
from claid.datasets.protocol import make_protocol
from claid.datasets.safe_pickle import load_ground_truth_pickle
from claid.structures import Benchmark, Query

SOURCE = "http://cmp.felk.cvut.cz/revisitop/ (images: the Oxford/Paris Buildings pages)"


def _image_ids(root: Path, images: str, names: list[str], ext: str) -> list[str]:
    """Image ids (relative to root) of the pickle's names: ``<images>/<name><ext>`` when
    the folder is flat, else found by name in its sub-folders (``paris/<landmark>/``)."""
    flat = [f"{images}/{n}{ext}" for n in names]
    if not names or (root / flat[0]).is_file():
        return flat
    stems = index_by_stem(root, images)
    absent = [n for n in names if n not in stems]
    if absent:
        raise DatasetFormatError(
            f"{root / images}: {len(absent)} image(s) named in the pickle are not in it or its "
            f"sub-folders, e.g. {absent[0]}{ext}"
        )
    return [stems[n] for n in names]


def _indices(value, n: int, where: str) -> list[int]:
    idx = np.asarray(value, dtype=np.int64).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise DatasetFormatError(f"{where}: index {int(idx.max())} outside imlist (0..{n - 1})")
    return idx.tolist()


def load_revisited(
    root: str | os.PathLike, *, name: str, query: str = "crop", ext: str = ".jpg"
) -> Benchmark:
    """ROxford5k or RParis6k from revisitop's ground-truth pickle.

    Args:
        root: dataset folder (see the module docstring for the layout).
        name: "roxford5k" or "rparis6k".
        query: how query boxes are described: "crop" (the protocol) or "pool".
        ext: image file extension appended to the names in the pickle.
    """
    if name not in ("roxford5k", "rparis6k"):
        raise ValueError(f"revisited dataset must be 'roxford5k' or 'rparis6k', got {name!r}")
    root = Path(root)
    layout = accepted_layouts(name, text=False)
    require(root, name=name, source=SOURCE, layout=layout, kind="dir")
    found = find_layout(root, name, text=False, source=SOURCE)
    gnd_path = found.ground_truth
    cfg = load_ground_truth_pickle(gnd_path)  # plain data only (safe_pickle.py)
    for key in ("imlist", "qimlist", "gnd"):
        if key not in cfg:
            raise DatasetFormatError(f"{gnd_path}: no {key!r} entry (keys: {sorted(cfg)})")
    imlist = _image_ids(root, found.images, [str(n) for n in cfg["imlist"]], ext)
    qimlist = _image_ids(root, found.images, [str(n) for n in cfg["qimlist"]], ext)
    if len(cfg["gnd"]) != len(qimlist):
        raise DatasetFormatError(
            f"{gnd_path}: {len(cfg['gnd'])} gnd entries for {len(qimlist)} queries"
        )
    absent = [i for i in imlist[:1] + qimlist[:1] if not (root / i).is_file()]
    if absent:
        raise DatasetFormatError(
            f"{name}: {root / absent[0]} listed in {gnd_path.name} does not exist; "
            f"accepted layouts:\n{layout}"
        )
    queries = []
    for i, (qimage, g) in enumerate(zip(qimlist, cfg["gnd"])):
        where = f"{gnd_path.name}: gnd[{i}]"
        sets = {
            k: [imlist[j] for j in _indices(g[k], len(imlist), f"{where}.{k}")]
            for k in ("easy", "hard", "junk")
        }
        queries.append(
            Query(
                image=qimage,
                box=check_box(np.asarray(g["bbx"]).ravel(), None, where=f"{where}.bbx"),
                positives=sets["easy"] + sets["hard"],
                junk=sets["junk"],
                qid=Path(qimage).stem,
                extra=sets,
            )
        )
    query_images = set(qimlist)
    database = [i for i in imlist if i not in query_images]
    return Benchmark(
        name=name,
        root=str(root),
        database=database,
        queries=queries,
        protocol=make_protocol(
            "revisited",
            query=query,
            remove_queries_from_db=True,
            junk=True,
            ground_truth=str(gnd_path),
            layout=found.describe(root),
        ),
    )


def load_roxford5k(root: str | os.PathLike, *, query: str = "crop") -> Benchmark:
    """Revisited Oxford5k (70 queries, 4,993 database images)."""
    return load_revisited(root, name="roxford5k", query=query)


def load_rparis6k(root: str | os.PathLike, *, query: str = "crop") -> Benchmark:
    """Revisited Paris6k (70 queries, 6,322 database images)."""
    return load_revisited(root, name="rparis6k", query=query)
