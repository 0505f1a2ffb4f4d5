"""INSTRE (Wang & Jiang 2015) with the standard split of Iscen et al. (gnd_instre.mat).

Layout::

    <root>/gnd_instre.mat
    <root>/INSTRE-S1/<class>/<nnn>.jpg   + <nnn>.txt  ("x y w h" a line, one object)
    <root>/INSTRE-S2/<class>/<nnn>.jpg   + <nnn>.txt
    <root>/INSTRE-M/<class>/<nnn>.jpg    + <nnn>.txt  (two lines: two objects)

``gnd_instre.mat`` holds ``qimlist`` (1,250 query paths relative to root),
``imlist`` (27,293 database paths) and per query ``ok`` (indices of the
positives in ``imlist``) and ``bbx`` (the query box). Neither the box format
of ``bbx`` (x1 y1 x2 y2 or x y w h) nor the index base of ``ok`` is documented
with the file, and public code reads them both ways. So this loader *checks*:
``bbx`` must agree with the query's ``.txt`` boxes (their union for INSTRE-M)
under exactly one reading, and ``ok`` must point into the query's own class
folder under exactly one index base; otherwise it stops and says what disagrees.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io

from claid.datasets.boxes import union_box, xywh_to_xyxy
from claid.datasets.files import DatasetFormatError, require
from claid.datasets.protocol import make_protocol
from claid.structures import Benchmark, Query

SOURCE = (
    "images: ftp://ftp.irisa.fr/local/texmex/corpus/instre/instre.tar.gz (or the authors' "
    "INSTRE_release.rar); split: ftp://ftp.irisa.fr/local/texmex/corpus/instre/gnd_instre.mat "
    "(also in https://cmp.felk.cvut.cz/~iscenahm/files/test_script.zip)"
)
LAYOUT = """\
gnd_instre.mat                        qimlist, imlist, gnd(ok, bbx)
INSTRE-S1/<class>/<nnn>.jpg + .txt    .txt: "x y w h" per object
INSTRE-S2/<class>/<nnn>.jpg + .txt
INSTRE-M/<class>/<nnn>.jpg + .txt     two objects per image"""
SUBSETS = ("INSTRE-S1", "INSTRE-S2", "INSTRE-M")
#: Pixels a gnd box may differ from the .txt boxes (rounding, 1-based corners).
BOX_TOLERANCE = 2.0


def _string(value) -> str:
    """Unwrap a MATLAB string cell (nested 0-d/1-element arrays) to str."""
    while isinstance(value, np.ndarray):
        if value.size != 1:
            if value.dtype.kind in "US":
                return "".join(value.ravel().tolist())
            raise DatasetFormatError(f"expected a string, got an array of shape {value.shape}")
        value = value.ravel()[0]
    return str(value)


def _field(entry, name: str, where: str) -> np.ndarray:
    try:
        return np.asarray(entry[name], dtype=np.float64).ravel()
    except (KeyError, ValueError, IndexError) as err:
        raise DatasetFormatError(f"{where}: no numeric field {name!r}") from err


def read_txt_boxes(path: Path) -> np.ndarray:
    """(K, 4) float32 x1 y1 x2 y2 boxes from an INSTRE ``x y w h`` file."""
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                rows.append([float(v) for v in parts])
            except ValueError as err:
                raise DatasetFormatError(f"{path}:{lineno}: not four numbers") from err
            if len(parts) != 4:
                raise DatasetFormatError(f"{path}:{lineno}: expected 'x y w h'")
    return xywh_to_xyxy(np.asarray(rows).reshape(-1, 4))


def _decide_box_format(bbx: list[np.ndarray], truth: list[np.ndarray | None]) -> str:
    """Return "xyxy" or "xywh": the one reading of every ``bbx`` that matches the
    union of the query's .txt boxes; raise when neither (or no query) can be checked."""
    checked = [(b, t) for b, t in zip(bbx, truth) if t is not None and len(t)]
    if not checked:
        raise DatasetFormatError(
            "INSTRE: no query has a .txt box file, so the bbx format of gnd_instre.mat "
            "cannot be checked; the .txt files must sit beside the images"
        )
    worst = {}
    for fmt in ("xyxy", "xywh"):
        errors = []
        for b, t in checked:
            box = b if fmt == "xyxy" else xywh_to_xyxy(b)[0]
            errors.append(np.abs(np.asarray(box) - np.asarray(union_box(t))).max())
        worst[fmt] = float(max(errors))
    fits = [fmt for fmt, err in worst.items() if err <= BOX_TOLERANCE]
    if not fits:
        raise DatasetFormatError(
            "INSTRE: gnd_instre.mat bbx matches the .txt boxes under no reading "
            f"(largest difference: x1y1x2y2 {worst['xyxy']:.1f} px, xywh {worst['xywh']:.1f} px "
            f"over {len(checked)} queries)"
        )
    # Both fit only when every checked box starts at the origin: the readings agree then.
    return fits[0]


def _decide_index_base(ok: list[np.ndarray], qimlist: list[str], imlist: list[str]) -> int:
    """Return 0 or 1: the one index base under which every query's ``ok`` images lie
    in the query's class folder; raise otherwise."""
    verdicts = {}
    for base in (0, 1):
        bad = None
        for q, idx in zip(qimlist, ok):
            j = idx.astype(np.int64) - base
            if j.size and (j.min() < 0 or j.max() >= len(imlist)):
                bad = f"index out of range for query {q}"
                break
            folder = str(Path(q).parent)
            strays = [imlist[k] for k in j if str(Path(imlist[k]).parent) != folder]
            if strays:
                bad = f"query {q} lists {strays[0]} from another class"
                break
        verdicts[base] = bad
    fits = [b for b, bad in verdicts.items() if bad is None]
    if len(fits) != 1:
        raise DatasetFormatError(
            "INSTRE: cannot tell the index base of gnd_instre.mat 'ok' from the class folders "
            f"(0-based: {verdicts[0] or 'consistent'}; 1-based: {verdicts[1] or 'consistent'})"
        )
    return fits[0]


def load_instre(
    root: str | os.PathLike,
    *,
    query: str = "crop",
    subset: str | None = None,
    load_boxes: bool = True,
) -> Benchmark:
    """INSTRE with the 1,250-query split; lab protocol (mAP-50/100/all).

    Args:
        root: dataset folder (layout in the module docstring).
        query: "crop" (the paper's text) or "pool" (the lab's code).
        subset: keep only the queries of "INSTRE-S1", "INSTRE-S2" or "INSTRE-M"
            (the paper's multi-instance study); the database stays whole.
        load_boxes: read every database image's .txt into ``gt_boxes`` (for mIoU).
    """
    if subset is not None and subset not in SUBSETS:
        raise ValueError(f"INSTRE subset must be one of {SUBSETS} or null, got {subset!r}")
    root = Path(root)
    require(root, name="instre", source=SOURCE, layout=LAYOUT, kind="dir")
    gnd_path = require(root / "gnd_instre.mat", name="instre", source=SOURCE, layout=LAYOUT)
    mat = scipy.io.loadmat(gnd_path)
    for key in ("qimlist", "imlist", "gnd"):
        if key not in mat:
            raise DatasetFormatError(f"{gnd_path}: no {key!r} variable")
    qimlist = [_string(v).replace("\\", "/") for v in mat["qimlist"].ravel()]
    imlist = [_string(v).replace("\\", "/") for v in mat["imlist"].ravel()]
    gnd = mat["gnd"].ravel()
    if len(gnd) != len(qimlist):
        raise DatasetFormatError(f"{gnd_path}: {len(gnd)} gnd entries for {len(qimlist)} queries")
    for image in qimlist[:1] + imlist[:1]:
        require(root / image, name="instre", source=SOURCE, layout=LAYOUT)

    ok = [_field(g, "ok", f"{gnd_path.name}: gnd[{i}]") for i, g in enumerate(gnd)]
    bbx = [_field(g, "bbx", f"{gnd_path.name}: gnd[{i}]") for i, g in enumerate(gnd)]
    for i, b in enumerate(bbx):
        if b.size != 4:
            raise DatasetFormatError(f"{gnd_path.name}: gnd[{i}].bbx has {b.size} numbers, not 4")

    def txt_boxes(image: str) -> np.ndarray | None:
        path = (root / image).with_suffix(".txt")
        return read_txt_boxes(path) if path.is_file() else None

    box_format = _decide_box_format(bbx, [txt_boxes(q) for q in qimlist])
    base = _decide_index_base(ok, qimlist, imlist)

    queries = []
    for q, idx, b in zip(qimlist, ok, bbx):
        if subset is not None and not q.startswith(subset + "/"):
            continue
        box = b if box_format == "xyxy" else xywh_to_xyxy(b)[0]
        queries.append(
            Query(
                image=q,
                box=tuple(float(v) for v in box),
                positives=[imlist[int(k) - base] for k in idx],
                qid=q.rsplit(".", 1)[0],
                extra={"subset": q.split("/", 1)[0]},
            )
        )
    query_images = set(qimlist)
    database = [i for i in imlist if i not in query_images]
    gt_boxes = {}
    if load_boxes:
        for image in database:
            boxes = txt_boxes(image)
            if boxes is not None and len(boxes):
                gt_boxes[image] = boxes
    return Benchmark(
        name="instre",
        root=str(root),
        database=database,
        queries=queries,
        gt_boxes=gt_boxes,
        protocol=make_protocol(
            "lab",
            query=query,
            remove_queries_from_db=True,
            junk=False,
            subset=subset,
            ground_truth=str(gnd_path),
            gnd_bbx_format=box_format,
            gnd_ok_index_base=base,
        ),
    )
