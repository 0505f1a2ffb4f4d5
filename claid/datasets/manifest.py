"""A user's own collection: a folder of images and an optional ``queries.jsonl``.

Layout::

    <root>/**/*.jpg|png|...     every image, searched recursively
    <root>/queries.jsonl        optional, one JSON object a line:
        {"image": "q/cup.jpg", "box": [x1, y1, x2, y2] | null,
         "positives": ["db/a.jpg", ...], "junk": [...], "qid": "cup"}

Paths are relative to ``root`` with "/"; ``box`` is in pixels of the image
(exclusive end), null for the whole image; ``positives``, ``junk`` and ``qid``
are optional. A query without positives is searched and its ranking saved, but
not scored: a warning names its line and the report counts it
(``counts.queries_without_positives``). The database is every image that is not a
query image. Without ``queries.jsonl`` the benchmark has no queries (protocol
family "none"): the run indexes the collection and stops, and searches come later
from the CLI. ``queries.jsonl`` is UTF-8; a line that is not is refused with its
number. File names that are not valid UTF-8 are kept as the bytes they are.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from claid.datasets.boxes import check_box
from claid.datasets.files import DatasetFormatError, list_images, missing
from claid.datasets.protocol import make_protocol
from claid.images import ImageError, displayed_size
from claid.structures import Benchmark, Query

log = logging.getLogger(__name__)

LAYOUT = """\
<root>/**/<image>.jpg|.png|...   your images, any sub-folders
<root>/queries.jsonl             optional: {"image", "box", "positives", "junk", "qid"} a line"""
_KEYS = {"image", "box", "positives", "junk", "qid"}


def _norm(path: str) -> str:
    p = path.replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    return p


def _image_list(value, key: str, where: str, known: set[str]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DatasetFormatError(f"{where}: {key!r} must be a list of image paths, got {value!r:.80}")
    out = [_norm(v) for v in value]
    unknown = [v for v in out if v not in known]
    if unknown:
        raise DatasetFormatError(
            f"{where}: {key} image {unknown[0]!r:.80} is not an image under the dataset root"
        )
    return out


def read_queries(
    path: str | os.PathLike, root: str | os.PathLike, images: list[str]
) -> list[Query]:
    """Parse a ``queries.jsonl`` against the images found under ``root``.

    Raises:
        DatasetFormatError: naming ``file:line`` for a malformed line, an unknown
            key or image, an empty box or a box outside its image, a duplicate qid,
            or a positive that is itself a query image (it would not be in the database).
    """
    known = set(images)
    queries: list[Query] = []
    name = Path(path).name
    with open(path, "rb") as f:
        lines = list(enumerate(f, start=1))
    for lineno, raw in lines:
        where = f"{name}:{lineno}"
        try:
            text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise DatasetFormatError(
                f"{where}: not valid UTF-8 (byte {raw[err.start]:#04x} at column {err.start + 1}); "
                "save queries.jsonl as UTF-8"
            ) from None
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetFormatError(f"{where}: not a JSON object ({err.msg})") from None
        except RecursionError:
            raise DatasetFormatError(f"{where}: nested deeper than the JSON reader allows") from None
        except ValueError as err:  # an integer longer than Python converts
            raise DatasetFormatError(f"{where}: not usable JSON ({str(err)[:80]})") from None
        if not isinstance(record, dict):
            raise DatasetFormatError(
                f"{where}: expected a JSON object, got {type(record).__name__}"
            )
        extra = sorted(set(record) - _KEYS)
        if extra:
            raise DatasetFormatError(f"{where}: unknown key(s) {str(extra):.120}; allowed: {sorted(_KEYS)}")
        image = record.get("image")
        if not isinstance(image, str):
            raise DatasetFormatError(f"{where}: 'image' (a path relative to the root) is required")
        image = _norm(image)
        if image not in known:
            raise DatasetFormatError(f"{where}: image {image!r:.80} is not an image under {root}")
        try:  # every query image must be readable, boxed or not (header only)
            size = displayed_size(Path(root) / image)
        except ImageError as err:
            raise DatasetFormatError(f"{where}: query image {image!r:.80}: {err.reason}") from err
        box = record.get("box")
        if box is not None:
            try:
                box = check_box(box, size, where=where, tolerance=0.0)
            except ValueError as err:
                raise DatasetFormatError(str(err)) from err
        qid = record.get("qid", f"{len(queries):04d}")
        if not isinstance(qid, str | int):
            raise DatasetFormatError(f"{where}: 'qid' must be a string, got {qid!r:.80}")
        queries.append(
            Query(
                image=image,
                box=box,
                positives=_image_list(record.get("positives"), "positives", where, known),
                junk=_image_list(record.get("junk"), "junk", where, known),
                qid=str(qid),
                extra={"line": lineno},
            )
        )
    query_images = {q.image for q in queries}
    without = [q for q in queries if not q.positives]
    if without:
        lines = ", ".join(f"{name}:{q.extra['line']}" for q in without[:5])
        log.warning("%d of %d queries have no positives (%s%s): they are searched and their "
                    "rankings saved, but not scored", len(without), len(queries), lines,
                    ", ..." if len(without) > 5 else "")
    seen: set[str] = set()
    for q in queries:
        where = f"{name}:{q.extra['line']}"
        if q.qid in seen:
            raise DatasetFormatError(f"{where}: qid {q.qid!r:.80} is used twice")
        seen.add(q.qid)
        clash = [p for p in q.positives if p in query_images]
        if clash:
            raise DatasetFormatError(
                f"{where}: positive {clash[0]!r:.80} is itself a query image, so it is not in the "
                "database; make a copy of it if it should be found"
            )
    return queries


_UPLOADED = re.compile(r"^[0-9a-f]{32}\.(png|jpg)$")


def _uploaded(images: list[str], queries_path: Path, root: Path) -> set[str]:
    """The images the query editor uploaded beside the queries file (``queries/<hash>.jpg``)."""
    try:
        folder = (Path(queries_path).parent / "queries").resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:  # the queries file lies outside the collection
        return set()
    return {i for i in images if i.rpartition("/")[0] == folder and _UPLOADED.match(i.rpartition("/")[2])}


def load_manifest(
    root: str | os.PathLike, *, queries_file: str = "queries.jsonl", query: str = "crop"
) -> Benchmark:
    """A folder of images as a Benchmark.

    Args:
        root: the collection's folder.
        queries_file: query list relative to ``root``; absent = index only.
        query: how query boxes are described: "crop" or "pool".

    Returns:
        Benchmark "manifest": protocol family "lab" with queries, "none" without.
    """
    root = Path(root)
    if not root.is_dir():
        raise missing("manifest", root, source="your own images (any folder)", layout=LAYOUT)
    images = list_images(root)
    qpath = root / queries_file
    if not qpath.is_file():
        return Benchmark(
            name="manifest",
            root=str(root),
            database=images,
            queries=[],
            protocol=make_protocol(
                "none", query=query, remove_queries_from_db=True, junk=False, queries_file=None
            ),
        )
    queries = read_queries(qpath, root, images)
    query_images = {q.image for q in queries}
    # photos the query editor uploaded (claid serve --queries: <queries file dir>/queries/<hash>)
    # are query photos only, never photos of the collection
    uploads = _uploaded(images, qpath, root)
    photos = [i for i in images if i not in uploads]
    removed = [i for i in photos if i in query_images]  # the protocol rule: not searched for any query
    for image in removed[:10]:
        log.info("query image %s is a photo of the collection: it leaves the database for every query", image)
    if removed:
        log.info("%d of %d photos are query images and left the database (%d remain)",
                 len(removed), len(photos), len(photos) - len(removed))
    return Benchmark(
        name="manifest",
        root=str(root),
        database=[i for i in images if i not in query_images],
        queries=queries,
        protocol=make_protocol(
            "lab",
            query=query,
            remove_queries_from_db=True,
            junk=any(q.junk for q in queries),
            queries_file=str(qpath),
            query_images_removed_from_database=len(removed),
        ),
    )
