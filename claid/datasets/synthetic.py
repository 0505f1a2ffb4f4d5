"""The synthetic benchmark: generated on first use from scikit-image's photos.

What it holds (all deterministic from ``seed``):

- *instance scenes* (database): cluttered backgrounds with 1..``max_instances``
  object instances at several scales and rotations, relit, some partly occluded;
  the visible box of every instance is recorded;
- *places* (database): ``near_duplicates`` views of each of several cluttered
  places (zoom, shift, small rotation, lighting, occlusion);
- queries, in separate images that are never in the database:
  ``single`` (a box on one instance of a query scene; positives: the database
  scenes holding that instance), ``multi`` (a box covering two adjacent
  instances; positives: scenes holding both) and ``image`` (a whole view of a
  place; positives: the other views of that place).

Images are written to ``<root>/<key>/`` where the key names the generation
parameters and a hash of them, so changing any parameter generates a new set
and never overwrites an old one. ``ground_truth.json`` in that folder holds the
parameters and every box.
"""

from __future__ import annotations

import json
import os

import numpy as np

from claid.datasets.protocol import make_protocol
from claid.datasets.synthetic_assets import load_instances
from claid.datasets.synthetic_generate import GROUND_TRUTH, ensure_generated, query_counts
from claid.structures import Benchmark, Query

#: Bump when the rendering changes, so old folders are not reused for new code.
GENERATOR_VERSION = 1
SPLITS = ("all", "single", "multi", "image")


def _params(
    *,
    seed: int,
    n_scenes: int,
    n_queries: int,
    image_size,
    near_duplicates: int,
    max_instances: int,
    jpeg_quality: int,
) -> dict:
    size = tuple(int(v) for v in image_size)
    if len(size) != 2 or min(size) < 64:
        raise ValueError(f"image_size must be [height, width], each >= 64 pixels; got {image_size}")
    if n_queries < 1:
        raise ValueError(f"n_queries must be >= 1, got {n_queries}")
    if near_duplicates < 1:
        raise ValueError(f"near_duplicates must be >= 1, got {near_duplicates}")
    if not 1 <= max_instances <= 4:
        raise ValueError(f"max_instances must be in 1..4, got {max_instances}")
    if not 50 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in 50..100, got {jpeg_quality}")
    counts = query_counts(n_queries)
    n_instance_scenes = n_scenes - counts["image"] * near_duplicates
    needed = 2 * counts["multi"] + len(load_instances()) // max_instances + 1
    if n_instance_scenes < needed:
        raise ValueError(
            f"n_scenes={n_scenes} is too small for n_queries={n_queries}: "
            f"{counts['image']} places x {near_duplicates} views leave {n_instance_scenes} "
            f"instance scenes, and at least {needed} are needed"
        )
    return {
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "n_scenes": int(n_scenes),
        "n_queries": int(n_queries),
        "image_size": list(size),
        "near_duplicates": int(near_duplicates),
        "max_instances": int(max_instances),
        "jpeg_quality": int(jpeg_quality),
    }


def _positive_boxes(query: dict, boxes_of: dict[str, dict[str, list]]) -> dict[str, np.ndarray]:
    """Positive image id -> (1, 4) float32 box of what the query looks for there:
    the instance's visible box, or for a multi-instance query the box enclosing
    both instances (as the query box does). Empty for whole-image queries."""
    out = {}
    for image in query["positives"] if query["instances"] else []:
        b = np.asarray([boxes_of[image][n] for n in query["instances"]], dtype=np.float32)
        out[image] = np.concatenate([b[:, :2].min(0), b[:, 2:].max(0)]).reshape(1, 4)
    return out


def load_synthetic(
    root: str | os.PathLike,
    *,
    seed: int = 0,
    n_scenes: int = 64,
    n_queries: int = 20,
    image_size: tuple[int, int] | list[int] = (240, 320),
    near_duplicates: int = 3,
    max_instances: int = 3,
    jpeg_quality: int = 92,
    split: str = "all",
    query: str = "crop",
) -> Benchmark:
    """The synthetic benchmark, generated under ``root`` on first use.

    Args:
        root: folder holding generated benchmarks (one sub-folder per parameter set).
        seed: the benchmark is a deterministic function of this and the sizes.
        n_scenes: database images (instance scenes plus place views).
        n_queries: query images; a quarter multi-instance, a quarter image
            retrieval, the rest single-instance (see :func:`query_counts`).
        image_size: (height, width) of every image in pixels. The default short
            side (240) is below 356, so the reference backbone keeps native size.
        near_duplicates: database views per place of the image-retrieval split.
        max_instances: most instances in one database scene.
        jpeg_quality: JPEG quality of the written images.
        split: which queries to return: "all", "single", "multi" or "image".
        query: how query boxes are described: "crop" or "pool" (image queries are
            whole images either way).

    Returns:
        A Benchmark scored with the lab protocol (mAP-50/100/all); every query
        carries ``extra={"kind", "instances", "positive_boxes"}``, the last
        mapping each positive to the (1, 4) box of the queried instance(s) there
        (for localisation scores; empty for whole-image queries).
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    params = _params(
        seed=seed,
        n_scenes=n_scenes,
        n_queries=n_queries,
        image_size=image_size,
        near_duplicates=near_duplicates,
        max_instances=max_instances,
        jpeg_quality=jpeg_quality,
    )
    folder = ensure_generated(root, params)
    with open(folder / GROUND_TRUTH) as f:
        truth = json.load(f)
    if truth["params"] != params:
        raise ValueError(
            f"{folder / GROUND_TRUTH} was generated with {truth['params']}, not {params}; "
            "delete the folder"
        )
    database = [d["image"] for d in truth["database"]]
    gt_boxes = {
        d["image"]: np.asarray([x["box"] for x in d["instances"]], dtype=np.float32).reshape(-1, 4)
        for d in truth["database"]
        if d["kind"] == "instances"
    }
    boxes_of = {
        d["image"]: {x["name"]: x["box"] for x in d["instances"]}
        for d in truth["database"]
        if d["kind"] == "instances"
    }
    queries = [
        Query(
            image=q["image"],
            box=None if q["box"] is None else tuple(float(v) for v in q["box"]),
            positives=list(q["positives"]),
            qid=q["qid"],
            extra={
                "kind": q["kind"],
                "instances": list(q["instances"]),
                "positive_boxes": _positive_boxes(q, boxes_of),
            },
        )
        for q in truth["queries"]
        if split == "all" or q["kind"] == split
    ]
    return Benchmark(
        name="synthetic",
        root=str(folder),
        database=database,
        queries=queries,
        gt_boxes=gt_boxes,
        protocol=make_protocol(
            "lab",
            query=query,
            remove_queries_from_db=True,
            junk=False,
            split=split,
            generator=params,
            query_kinds=query_counts(n_queries),
        ),
    )

