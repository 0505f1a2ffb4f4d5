"""Generating the synthetic benchmark: plan what every image holds, render it, and
write it to a folder named by its parameters (atomically: a temporary folder renamed
at the end). The loader is :mod:`claid.datasets.synthetic`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from claid.artifacts import temp_path
from claid.datasets.synthetic_assets import load_clutter, load_instances, load_textures
from claid.datasets.synthetic_scenes import render_instance_scene, render_place, view_of_place

GROUND_TRUTH = "ground_truth.json"

# Seeds of independent random streams: planning, and one per image family.
_PLAN, _SCENE, _PLACE, _VIEW, _QUERY = range(5)


def query_counts(n_queries: int) -> dict[str, int]:
    """How ``n_queries`` split into kinds: a quarter multi-instance, a quarter
    image retrieval, the rest single-instance."""
    n_multi = n_image = n_queries // 4
    return {"single": n_queries - n_multi - n_image, "multi": n_multi, "image": n_image}


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
    tmp = temp_path(folder)
    tmp.mkdir()
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
