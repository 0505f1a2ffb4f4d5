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

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from claid.datasets.protocol import make_protocol
from claid.datasets.synthetic_assets import load_clutter, load_instances, load_textures
from claid.datasets.synthetic_scenes import render_instance_scene, render_place, view_of_place
from claid.structures import Benchmark, Query

#: Bump when the rendering changes, so old folders are not reused for new code.
GENERATOR_VERSION = 1
GROUND_TRUTH = "ground_truth.json"
SPLITS = ("all", "single", "multi", "image")

# Seeds of independent random streams: planning, and one per image family.
_PLAN, _SCENE, _PLACE, _VIEW, _QUERY = range(5)


def query_counts(n_queries: int) -> dict[str, int]:
    """How ``n_queries`` split into kinds: a quarter multi-instance, a quarter
    image retrieval, the rest single-instance."""
    n_multi = n_image = n_queries // 4
    return {"single": n_queries - n_multi - n_image, "multi": n_multi, "image": n_image}


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


def folder_name(params: dict) -> str:
    """Readable prefix plus a hash of all generation parameters."""
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    h, w = params["image_size"]
    return (
        f"synthetic-s{params['seed']}-n{params['n_scenes']}-q{params['n_queries']}-{h}x{w}-{digest}"
    )


def plan(params: dict) -> dict:
    """Decide what every image contains (names only, nothing rendered).

    Returns:
        {"scenes": [list of instance names per instance scene],
         "pairs": [[a, b] per multi query], "single": [name per single query],
         "single_extra": [None or a distractor instance name per single query],
         "order": permutation placing instance scenes and place views in the database}
    """
    rng = np.random.default_rng([params["seed"], _PLAN])
    names = [a.name for a in load_instances()]
    counts = query_counts(params["n_queries"])
    n_views = counts["image"] * params["near_duplicates"]
    n_instance_scenes = params["n_scenes"] - n_views
    max_k = params["max_instances"]

    all_pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    pick = rng.choice(len(all_pairs), size=counts["multi"], replace=False)
    pairs = [list(all_pairs[int(i)]) for i in pick]

    usage = dict.fromkeys(names, 0)
    scenes: list[list[str]] = []

    def least_used(k: int, exclude: set[str]) -> list[str]:
        # Balanced use: every instance gets positives; random tie-break keeps variety.
        pool = [n for n in names if n not in exclude]
        keys = rng.random(len(pool))
        ranked = sorted(zip(pool, keys), key=lambda t: (usage[t[0]], t[1]))
        return [n for n, _ in ranked[:k]]

    for a, b in pairs:
        for _ in range(2):
            content = [a, b]
            if max_k >= 3 and rng.random() < 0.3:
                content += least_used(1, set(content))
            scenes.append(content)
            for n in content:
                usage[n] += 1
    while len(scenes) < n_instance_scenes:
        k = int(rng.integers(1, max_k + 1))
        content = least_used(k, set())
        rng.shuffle(content)
        scenes.append(content)
        for n in content:
            usage[n] += 1

    order = rng.permutation(params["n_scenes"]).tolist()
    targets = [names[int(i)] for i in rng.permutation(len(names))]
    single = [targets[i % len(targets)] for i in range(counts["single"])]
    single_extra = []
    for target in single:
        if max_k >= 2 and rng.random() < 0.5:
            others = [n for n in names if n != target]
            single_extra.append(others[int(rng.integers(len(others)))])
        else:
            single_extra.append(None)
    return {
        "scenes": scenes,
        "pairs": pairs,
        "single": single,
        "single_extra": single_extra,
        "order": order,
    }


def generate(params: dict, folder: Path) -> dict:
    """Render every image of the benchmark into ``folder`` and return the ground truth
    (also written to ``folder/ground_truth.json``)."""
    size = tuple(params["image_size"])
    seed = params["seed"]
    assets = {a.name: a for a in load_instances()}
    clutter, textures = load_clutter(), load_textures()
    layout = plan(params)
    counts = query_counts(params["n_queries"])
    (folder / "database").mkdir(parents=True)
    (folder / "queries").mkdir(parents=True)

    def save(image: np.ndarray, rel: str) -> None:
        Image.fromarray(image).save(folder / rel, quality=params["jpeg_quality"])

    # Database slot i gets item order[i]: instance scenes first, then place views.
    items: list[dict] = []
    for i, content in enumerate(layout["scenes"]):
        rng = np.random.default_rng([seed, _SCENE, i])
        image, boxes, visible = render_instance_scene(
            rng, size, [assets[n] for n in content], clutter=clutter, textures=textures
        )
        items.append(
            {
                "kind": "instances",
                "image_data": image,
                "instances": [
                    {"name": n, "box": list(b), "visible": round(v, 4)}
                    for n, b, v in zip(content, boxes, visible)
                ],
            }
        )
    places = [
        render_place(
            np.random.default_rng([seed, _PLACE, g]), size, clutter=clutter, textures=textures
        )
        for g in range(counts["image"])
    ]
    for g, place in enumerate(places):
        for v in range(params["near_duplicates"]):
            rng = np.random.default_rng([seed, _VIEW, g, v])
            items.append(
                {
                    "kind": "place",
                    "place": g,
                    "image_data": view_of_place(rng, place, size, clutter=clutter),
                }
            )

    database = []
    for slot, item_index in enumerate(layout["order"]):
        item = items[item_index]
        rel = f"database/scene_{slot:04d}.jpg"
        save(item.pop("image_data"), rel)
        database.append({"image": rel, **item})

    def holding(required: set[str]) -> list[str]:
        return [
            d["image"]
            for d in database
            if d["kind"] == "instances" and required <= {x["name"] for x in d["instances"]}
        ]

    queries = []
    for i, (target, extra) in enumerate(zip(layout["single"], layout["single_extra"])):
        rng = np.random.default_rng([seed, _QUERY, 0, i])
        content = [target] + ([extra] if extra else [])
        image, boxes, _ = render_instance_scene(
            rng, size, [assets[n] for n in content], clutter=clutter, textures=textures
        )
        rel = f"queries/single_{i:03d}.jpg"
        save(image, rel)
        queries.append(
            {
                "qid": f"single_{i:03d}",
                "kind": "single",
                "image": rel,
                "box": list(boxes[0]),
                "instances": [target],
                "positives": holding({target}),
            }
        )
    for i, pair in enumerate(layout["pairs"]):
        rng = np.random.default_rng([seed, _QUERY, 1, i])
        image, boxes, _ = render_instance_scene(
            rng,
            size,
            [assets[n] for n in pair],
            clutter=clutter,
            textures=textures,
            adjacent=True,
            scale_range=(0.3, 0.5),
        )
        b = np.asarray(boxes)
        rel = f"queries/multi_{i:03d}.jpg"
        save(image, rel)
        queries.append(
            {
                "qid": f"multi_{i:03d}",
                "kind": "multi",
                "image": rel,
                "box": [
                    int(b[:, 0].min()),
                    int(b[:, 1].min()),
                    int(b[:, 2].max()),
                    int(b[:, 3].max()),
                ],
                "instances": list(pair),
                "positives": holding(set(pair)),
            }
        )
    for g, place in enumerate(places):
        rng = np.random.default_rng([seed, _QUERY, 2, g])
        rel = f"queries/image_{g:03d}.jpg"
        save(view_of_place(rng, place, size, clutter=clutter), rel)
        queries.append(
            {
                "qid": f"image_{g:03d}",
                "kind": "image",
                "image": rel,
                "box": None,
                "instances": [],
                "positives": [
                    d["image"] for d in database if d["kind"] == "place" and d["place"] == g
                ],
            }
        )

    for q in queries:
        if not q["positives"]:  # the plan guarantees positives; a bug must not pass silently
            raise RuntimeError(f"synthetic query {q['qid']} has no positive")
    truth = {"params": params, "database": database, "queries": queries}
    with open(folder / GROUND_TRUTH, "w") as f:
        json.dump(truth, f, indent=1)
    return truth


def ensure_generated(root: str | os.PathLike, params: dict) -> Path:
    """Return the benchmark folder for ``params`` under ``root``, generating it
    first if it does not exist. Generation goes to a temporary folder renamed at
    the end, so an interrupted run never leaves a half-written benchmark."""
    root = Path(root)
    folder = root / folder_name(params)
    if (folder / GROUND_TRUTH).is_file():
        return folder
    if folder.exists():
        raise ValueError(
            f"{folder} exists but has no {GROUND_TRUTH}; it is not a complete synthetic "
            "benchmark. Delete it and run again."
        )
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-" + folder.name + "-", dir=root))
    try:
        generate(params, tmp / "data")
        try:
            os.rename(tmp / "data", folder)
        except OSError:
            # Another process finished the same benchmark first: theirs is identical.
            if not (folder / GROUND_TRUTH).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


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
