"""INRIA Holidays (Jegou et al. 2008).

Layout::

    <root>/jpg/<NNNNNN>.jpg     1,491 images named by a six-digit number

Group = number // 100; the image whose number is divisible by 100 is the
group's query, the other images of the group are its positives. Protocol: the
whole image is the query, all 1,491 images stay in the database and each query
is skipped in its own results; trapezoid AP over 500 queries. A manually
rotated copy (upright images) is widely used; say which copy you have with
``copy`` so the result records it.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from claid.datasets.files import DatasetFormatError, list_images, require
from claid.datasets.protocol import make_protocol
from claid.structures import Benchmark, Query

SOURCE = (
    "https://lear.inrialpes.fr/~jegou/data.php (jpg1.tar.gz, jpg2.tar.gz); "
    "the rotated copy is shipped e.g. with cnnimageretrieval-pytorch's test data"
)
LAYOUT = "jpg/<NNNNNN>.jpg     e.g. jpg/100000.jpg (query of group 1000), jpg/100001.jpg"
COPIES = ("original", "rotated")


def load_holidays(root: str | os.PathLike, *, copy: str = "original") -> Benchmark:
    """INRIA Holidays, 500 whole-image queries.

    Args:
        root: dataset folder (layout in the module docstring).
        copy: "original" or "rotated": which copy of the images is under root
            (recorded in the protocol; it changes the scores).
    """
    if copy not in COPIES:
        raise ValueError(f"holidays copy must be one of {COPIES}, got {copy!r}")
    root = Path(root)
    require(root, name="holidays", source=SOURCE, layout=LAYOUT, kind="dir")
    require(root / "jpg", name="holidays", source=SOURCE, layout=LAYOUT, kind="dir")
    images = [f"jpg/{rel}" for rel in list_images(root / "jpg")]
    groups: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for image in images:
        stem = Path(image).stem
        if not (stem.isdigit() and len(stem) == 6):
            raise DatasetFormatError(f"holidays: {image} is not named by a six-digit number")
        number = int(stem)
        groups[number // 100].append((number, image))
    queries = []
    for group in sorted(groups):
        members = sorted(groups[group])
        heads = [image for number, image in members if number % 100 == 0]
        if len(heads) != 1:
            raise DatasetFormatError(
                f"holidays: group {group} has {len(heads)} query images (numbers divisible by 100)"
            )
        queries.append(
            Query(
                image=heads[0],
                box=None,
                positives=[image for number, image in members if number % 100 != 0],
                qid=Path(heads[0]).stem,
            )
        )
    return Benchmark(
        name="holidays",
        root=str(root),
        database=images,
        queries=queries,
        protocol=make_protocol(
            "trapezoid",
            query="full",
            remove_queries_from_db=False,
            junk=False,
            remove_query_image="always",
            copy=copy,
        ),
    )
