"""Search an indexed collection with new queries, from Python or the command line.

    claid.search(["query.jpg"], boxes=[(10, 20, 200, 180)], index_dir="outputs/cache/index-ab12")

    python -m claid search --index-dir outputs/cache/index-ab12 query.jpg --box 10 20 200 180
    claid.search_text(["a red mug"], index_dir=...)        # an index built with siglip_tokens
    python -m claid search --index-dir outputs/cache/index-ab12 --text "a red mug"

An index dir (written by a ``run.py`` job; its path is in the run's metrics.json under
settings.index) holds the FAISS index, the image and box of every indexed region and
the descriptor's registered name and settings (nothing in the dir is run as code), so
queries are described exactly as the collection was.

The steps of a search, public for other front ends (``claid serve`` is built on them):
:func:`checked_meta` (an index dir's record, after a structural check),
:func:`recorded_descriptor_class` / :func:`recorded_descriptor` (the descriptor it names)
and :func:`query_vector` (one image + box -> its vector); ranking is
:func:`claid.index.search_images` / :func:`claid.index.first_appearances`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from claid.datasets.boxes import check_box
from claid.index.search_table import load_search_table, read_search_meta
from claid.structures import Ranking


class QueryError(ValueError):
    """A query claid cannot search with (bad box, text for an index without a text
    encoder...); the message says which and why."""


def search(
    queries: Sequence[str | Path | Image.Image],
    *,
    index_dir: str | Path,
    boxes: Sequence[Sequence[float] | None] | None = None,
    top: int = 100,
    k: int | None = None,
    descriptor=None,
    rerank: dict | None = None,
) -> list[Ranking]:
    """Rank the indexed images for each query image (+ optional box).

    Args:
        queries: image paths or PIL images.
        index_dir: an index dir written by the pipeline.
        boxes: per query (x1, y1, x2, y2) in that image's pixels (exclusive end,
            inside the image: a box reaching past an edge is refused, as in
            queries.jsonl, rather than silently clipped), or None for the whole
            image; default: whole images.
        top: how many images to keep per query.
        k: regions retrieved per query before image ranking (None: all).
        descriptor: an already built RegionDescriptor (default: built from the
            config recorded in the index dir, with its weights settings).
        rerank: re-ranking methods and settings (``claid.rerank.cli.parse_methods("dba,aqe")``),
            using the DBA index / diffusion offline part cached beside the index dir.
    Returns:
        One Ranking per query (qid "0", "1", ...): image ids, scores, localised boxes.
    """
    from claid.images import load_image

    _check_top(top)
    if boxes is None:
        boxes = [None] * len(queries)
    if len(boxes) != len(queries):
        raise QueryError(f"{len(queries)} queries but {len(boxes)} boxes")
    meta = checked_meta(index_dir)
    descriptor = descriptor if descriptor is not None else recorded_descriptor(meta, index_dir)
    rows = []
    for i, (query, box) in enumerate(zip(queries, boxes)):
        image = query if isinstance(query, Image.Image) else load_image(str(query))
        where = f"query {i}" + ("" if isinstance(query, Image.Image) else f" ({query})")
        rows.append(query_vector(descriptor, image, box, where=where))
    return _rank(index_dir, rows, top=top, k=k, rerank=rerank)


def query_vector(descriptor, image: Image.Image, box: Sequence[float] | None, *, where: str) -> np.ndarray:
    """One image query (+ optional box, checked as queries.jsonl boxes are) -> its
    (D,) vector, described as the collection was (also what ``claid serve`` runs)."""
    if box is not None:
        try:
            box = check_box(box, (image.height, image.width), where=where, tolerance=0.0)
        except ValueError as err:
            raise QueryError(str(err)) from err
    return descriptor.describe_query(image, box)


def search_text(
    texts: Sequence[str],
    *,
    index_dir: str | Path,
    top: int = 100,
    k: int | None = None,
    descriptor=None,
) -> list[Ranking]:
    """Text-to-instance search: rank the indexed images for each text, through the
    descriptor's text encoder (an index built with ``descriptor=siglip_tokens``).

    Args:
        texts: the text queries.
        index_dir, top, k, descriptor: as in :func:`search`.
    Returns:
        One Ranking per text (qid "0", "1", ...): image ids, scores, localising boxes.
    Raises:
        ValueError: the index's descriptor has no text encoder, or a text is not a string.
    """
    _check_top(top)
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise QueryError("texts must be a list of strings")
    meta = checked_meta(index_dir)
    record = meta.get("descriptor") or {}
    if descriptor is None:
        # checked on the class, before building a network that could not read the text
        if hasattr(recorded_descriptor_class(meta, index_dir), "encode_text"):
            descriptor = recorded_descriptor(meta, index_dir)
    if descriptor is None or not hasattr(descriptor, "encode_text"):
        name = record.get("name") or record.get("target") if isinstance(record, dict) else None
        raise QueryError(
            f"{index_dir} was indexed with {name}, which has no text encoder; index the "
            "collection with descriptor=siglip_tokens backbone=siglip_vitb16"
        )
    return _rank(index_dir, list(descriptor.encode_text(list(texts))), top=top, k=k)


def _check_top(top: int) -> None:
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise QueryError(f"top must be an integer >= 1, got {top!r}")


def checked_meta(index_dir: str | Path) -> dict:
    """The ``search.json`` record of an index dir whose files have their recorded sizes.

    A quick structural check (``python -m claid verify`` also compares checksums),
    made before anything searches the dir.

    Raises:
        DamagedArtifactError: a file is missing or has another size than recorded
            (one line naming the dir and the files).
    """
    from claid.artifacts import DamagedArtifactError
    from claid.index.index_dir_check import index_dir_problems

    meta = read_search_meta(index_dir)
    problems = index_dir_problems(index_dir, checksums=False)
    if problems:
        raise DamagedArtifactError(f"index dir {index_dir} is damaged: {'; '.join(problems)}; "
                                   "rerun the run.py job that built it (it rebuilds the index)")
    return meta


def descriptor_where(index_dir: str | Path) -> str:
    """How messages name an index dir's descriptor record (``<dir>/search.json: descriptor``)."""
    return f"{Path(index_dir) / 'search.json'}: descriptor"


def recorded_descriptor_class(meta: dict, index_dir: str | Path) -> type:
    """The registered class the index's descriptor record names, checked, nothing built
    (e.g. to ask whether it has a text encoder before loading a network).

    Raises:
        RecordedDescriptorError: the record names no registered class or holds a setting
            the class does not take.
    """
    from claid.config.registered import descriptor_class

    return descriptor_class(meta.get("descriptor") or {}, descriptor_where(index_dir))


def recorded_descriptor(meta: dict, index_dir: str | Path):
    """The descriptor the index was built with, built from its recorded name and settings
    (checked against claid's registered classes: nothing the file names is run).

    Raises:
        RecordedDescriptorError: as :func:`recorded_descriptor_class`, or a nested record
            (a ViT descriptor's backbone) that is not claid's.
        WeightsUnavailableError: pretrained weights the record asks for are not cached.
    """
    from claid.config.registered import build_recorded_descriptor

    return build_recorded_descriptor(meta.get("descriptor"), descriptor_where(index_dir))


def _rank(index_dir: str | Path, rows: list[np.ndarray], *, top: int, k: int | None,
          rerank: dict | None = None) -> list[Ranking]:
    """Query vectors -> the first ``top`` images of each ranking."""
    from claid.index import RegionIndex, search_images

    if not rows:
        return []
    if rerank:
        from claid.rerank.cli import reranked_search

        found = reranked_search(index_dir, np.stack(rows).astype(np.float32),
                                [str(i) for i in range(len(rows))], k=k, methods=rerank)
        return [Ranking(r.qid, r.images[:top], r.scores[:top], r.boxes[:top]) for r in found]
    meta, region_image, region_boxes = load_search_table(index_dir)
    rankings = search_images(
        RegionIndex.load(index_dir, mmap=True),  # a flat index stays in its file
        np.stack(rows).astype(np.float32),
        region_image,
        region_boxes,
        meta["image_ids"],
        [str(i) for i in range(len(rows))],
        k=k,
    )
    return [Ranking(r.qid, r.images[:top], r.scores[:top], r.boxes[:top]) for r in rankings]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="claid search", description=__doc__.split("\n")[0])
    parser.add_argument("image", nargs="?", help="query image (or --text)")
    parser.add_argument("--index-dir", required=True, help="index dir written by run.py")
    parser.add_argument("--box", nargs=4, type=float, metavar=("X1", "Y1", "X2", "Y2"), default=None)
    parser.add_argument("--text", help="a text query (index built with descriptor=siglip_tokens)")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--rerank", default="none", help="re-rank with the cached DBA index / diffusion "
                        "offline part: none | aqe | dba | diffusion, or several: dba,aqe")
    parser.add_argument("--rerank-set", action="append", default=[], metavar="METHOD.KEY=VALUE",
                        help="a setting of --rerank other than conf/rerank's default (repeatable)")
    args = parser.parse_args(argv)
    if args.image is None and args.text is None:
        parser.error("give a query image or --text")
    if args.image is not None and args.text is not None:
        parser.error("give a query image or --text, not both")
    if args.text is not None and args.box is not None:
        parser.error("--box goes with an image query")
    if args.top < 1:
        parser.error(f"--top must be >= 1, got {args.top}")
    from claid.artifacts import DamagedArtifactError
    from claid.config.registered import RecordedDescriptorError
    from claid.config.rules import SettingsError
    from claid.images import ImageError
    from claid.models.weights import WeightsUnavailableError
    from claid.rerank.cli import RerankUnavailable, parse_methods

    try:
        methods = parse_methods(args.rerank, args.rerank_set)
        if methods and args.text is not None:
            raise QueryError("--rerank goes with an image query")
        if args.text is not None:
            (ranking,) = search_text([args.text], index_dir=args.index_dir, top=args.top)
        else:
            (ranking,) = search([args.image], index_dir=args.index_dir, boxes=[args.box], top=args.top,
                                rerank=methods)
    except (QueryError, ImageError, WeightsUnavailableError, FileNotFoundError,
            RecordedDescriptorError, DamagedArtifactError, RerankUnavailable, SettingsError) as err:
        sys.exit(f"error: {err}")
    rows = [
        {"rank": i + 1, "image": image, "score": float(score), "box": [round(float(v), 1) for v in box]}
        for i, (image, score, box) in enumerate(zip(ranking.images, ranking.scores, ranking.boxes))
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        print(f"{row['rank']:>4}  {row['score']:.4f}  {row['image']}  box={row['box']}")


if __name__ == "__main__":
    main()
