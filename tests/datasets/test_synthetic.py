"""The synthetic benchmark: determinism, ground-truth validity, split hygiene."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from claid.datasets.synthetic import GROUND_TRUTH, load_synthetic, query_counts
from claid.datasets.synthetic_assets import Asset, load_instances
from claid.datasets.synthetic_scenes import render_instance_scene

SMALL = dict(n_scenes=24, n_queries=8, image_size=(160, 208), near_duplicates=2)
CONF = Path(__file__).resolve().parents[2] / "conf" / "dataset" / "synthetic.yaml"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return load_synthetic(tmp_path_factory.mktemp("syn"), seed=3, **SMALL)


def _truth(bench) -> dict:
    with open(Path(bench.root) / GROUND_TRUTH) as f:
        return json.load(f)


def test_same_seed_same_images_other_seed_other_images(tmp_path, small):
    again = load_synthetic(tmp_path / "a", seed=3, **SMALL)
    assert _truth(again) == _truth(small)
    for image_id in again.database[:5] + [q.image for q in again.queries[:3]]:
        a = np.asarray(Image.open(again.path(image_id)))
        b = np.asarray(Image.open(small.path(image_id)))
        assert np.array_equal(a, b), image_id
    other = load_synthetic(tmp_path / "a", seed=4, **SMALL)
    assert other.root != again.root  # keyed by parameters, both kept
    assert Path(again.root, GROUND_TRUTH).is_file()
    a = np.asarray(Image.open(other.path(other.database[0])), dtype=np.int16)
    b = np.asarray(Image.open(again.path(again.database[0])), dtype=np.int16)
    assert np.abs(a - b).mean() > 10


def test_reuses_existing_folder(tmp_path):
    first = load_synthetic(tmp_path, seed=1, **SMALL)
    marker = Path(first.root, first.database[0])
    stamp = marker.stat().st_mtime_ns
    second = load_synthetic(tmp_path, seed=1, **SMALL)
    assert second.root == first.root and marker.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [Path(first.root).name]  # no temp left over


def test_sizes_and_query_mix(small):
    counts = query_counts(SMALL["n_queries"])
    assert len(small.database) == SMALL["n_scenes"]
    assert len(small.queries) == SMALL["n_queries"]
    kinds = [q.extra["kind"] for q in small.queries]
    assert {k: kinds.count(k) for k in counts} == counts
    h, w = SMALL["image_size"]
    for image_id in small.database + [q.image for q in small.queries]:
        with Image.open(small.path(image_id)) as im:
            assert im.size == (w, h) and im.mode == "RGB"


def test_queries_and_database_are_disjoint(small):
    database = set(small.database)
    assert len(database) == len(small.database)
    for q in small.queries:
        assert q.image not in database
        assert q.positives and set(q.positives) <= database
        assert not q.junk
    assert len({q.qid for q in small.queries}) == len(small.queries)
    assert small.protocol["family"] == "lab" and small.protocol["remove_queries_from_db"]


def test_gt_boxes_are_valid_pixels(small):
    h, w = SMALL["image_size"]
    assert small.gt_boxes
    for image_id, boxes in small.gt_boxes.items():
        assert image_id in small.database
        assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    for q in small.queries:
        if q.extra["kind"] == "image":
            assert q.box is None
        else:
            x1, y1, x2, y2 = q.box
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h


def test_positives_are_exactly_the_scenes_holding_the_instances(small):
    truth = _truth(small)
    holds = {
        d["image"]: {x["name"] for x in d["instances"]}
        for d in truth["database"]
        if d["kind"] == "instances"
    }
    places = {d["image"]: d["place"] for d in truth["database"] if d["kind"] == "place"}
    for q in small.queries:
        if q.extra["kind"] == "image":
            group = {places[p] for p in q.positives}
            assert len(group) == 1 and len(q.positives) == SMALL["near_duplicates"]
            assert set(q.positives) == {i for i, g in places.items() if g in group}
        else:
            need = set(q.extra["instances"])
            assert len(need) == (2 if q.extra["kind"] == "multi" else 1)
            assert set(q.positives) == {i for i, names in holds.items() if need <= names}


def test_split_selects_query_kind(tmp_path, small):
    multi = load_synthetic(Path(small.root).parent, seed=3, split="multi", **SMALL)
    assert multi.queries and all(q.extra["kind"] == "multi" for q in multi.queries)
    assert multi.database == small.database
    with pytest.raises(ValueError, match="split"):
        load_synthetic(tmp_path, split="hard", **SMALL)


def test_bad_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="too small"):
        load_synthetic(tmp_path, n_scenes=8, n_queries=20)
    with pytest.raises(ValueError, match="image_size"):
        load_synthetic(tmp_path, image_size=(32, 32))
    assert not any(tmp_path.iterdir())


def test_incomplete_folder_is_an_error(tmp_path, small):
    name = Path(small.root).name
    (tmp_path / name).mkdir()
    with pytest.raises(ValueError, match="Delete it"):
        load_synthetic(tmp_path, seed=3, **SMALL)


def _solid(name: str, colour, h: int, w: int) -> Asset:
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[:] = colour
    return Asset(name=name, rgb=rgb, alpha=np.ones((h, w), np.float32))


@pytest.mark.parametrize("seed", range(6))
def test_recorded_boxes_match_visible_pixels(seed):
    # Red and green instances on black textures under blue clutter: every pixel's
    # owner can be read off its colour, independently of the renderer's own bookkeeping.
    red, green = _solid("red", (255, 0, 0), 60, 40), _solid("green", (0, 255, 0), 50, 50)
    clutter = (_solid("blue", (0, 0, 255), 40, 40),)
    textures = (np.zeros((256, 256), np.uint8),)
    image, boxes, visible = render_instance_scene(
        np.random.default_rng(seed),
        (150, 200),
        [red, green],
        clutter=clutter,
        textures=textures,
        occlusion_prob=1.0,
        min_visible=0.6,
    )
    img = image.astype(int)
    for channel, box, frac in zip((0, 1), boxes, visible):
        others = [c for c in range(3) if c != channel]
        own = (img[:, :, channel] > 60) & (img[:, :, channel] > img[:, :, others].max(axis=2) + 40)
        ys, xs = np.nonzero(own)
        colour_box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        # Blended edge pixels may tip either way: allow 2 pixels.
        assert np.abs(np.subtract(colour_box, box)).max() <= 2, (colour_box, box)
        assert 0.6 <= frac <= 1.0


def test_instances_are_distinct_cut_outs():
    assets = load_instances()
    assert len({a.name for a in assets}) == len(assets) >= 10
    means = np.array([a.rgb.reshape(-1, 3).mean(axis=0) for a in assets])
    gaps = np.linalg.norm(means[:, None] - means[None], axis=2) + np.eye(len(assets)) * 1e3
    assert gaps.min() > 3  # no two crops are the same patch


def test_default_config_instantiates(tmp_path):
    cfg = OmegaConf.load(CONF)
    cfg.root = str(tmp_path)
    cfg.query = "crop"  # composed configs take it from descriptor.query
    bench = instantiate(cfg)
    assert bench.name == "synthetic"
    assert 60 <= len(bench.database) <= 100 and 15 <= len(bench.queries) <= 30
    assert min(cfg.image_size) < 356


def test_positive_boxes_locate_the_queried_instances(small):
    truth = _truth(small)
    boxes_of = {
        d["image"]: {x["name"]: x["box"] for x in d["instances"]}
        for d in truth["database"]
        if d["kind"] == "instances"
    }
    for q in small.queries:
        located = q.extra["positive_boxes"]
        if q.extra["kind"] == "image":
            assert located == {}
            continue
        assert set(located) == set(q.positives)
        for image, box in located.items():
            assert box.shape == (1, 4) and box.dtype == np.float32
            # The located box encloses each queried instance's own box in that image.
            for name in q.extra["instances"]:
                x1, y1, x2, y2 = boxes_of[image][name]
                assert box[0, 0] <= x1 and box[0, 1] <= y1 and box[0, 2] >= x2 and box[0, 3] >= y2
            if q.extra["kind"] == "single":
                assert box[0].tolist() == boxes_of[image][q.extra["instances"][0]]


def test_evaluator_accepts_the_benchmark(small):
    # The evaluation helper's contract: a perfect ranking scores 1, the reverse less.
    from claid.evaluation.protocols import evaluate
    from claid.structures import Ranking

    def ranking(q, order):
        n = len(order)
        return Ranking(qid=q.qid, images=order, scores=np.linspace(1, 0.1, n, dtype=np.float32),
                       boxes=np.zeros((n, 4), np.float32))  # fmt: skip

    perfect, reverse = [], []
    for q in small.queries:
        rest = [i for i in small.database if i not in q.positives]
        perfect.append(ranking(q, q.positives + rest))
        reverse.append(ranking(q, rest + q.positives))
    best = evaluate(perfect, small)[0].values
    worst = evaluate(reverse, small)[0].values
    assert best == {"mAP-50": 1.0, "mAP-100": 1.0, "mAP-all": 1.0}
    assert worst["mAP-all"] < 0.5
