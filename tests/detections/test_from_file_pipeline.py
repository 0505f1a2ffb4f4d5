"""cutter=from_file end to end: a COCO file made here runs through pipeline.run."""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from claid.config.build import build
from claid.pipeline import run
from claid.store import RegionStore

SMALL = ["descriptor.pretrained=false", "backbone.pretrained=false", "engine.batch_size=4"]
TINY = ["dataset.n_scenes=6", "dataset.n_queries=3", "dataset.image_size=[96,128]"]


def _bench(compose_cfg):
    return build(compose_cfg(*SMALL, *TINY).dataset)


def _boxes(k):
    """Two boxes per image, x y w h in a 128x96 image, different per image."""
    return [[4.0 + k, 6.0, 50.0, 40.0], [60.0, 30.0 + k, 60.0, 50.0]]


def _rle(box, size=(96, 128)):
    m = np.zeros(size, dtype=np.uint8)
    x, y, w, h = (int(v) for v in box)
    m[y + 2:y + h - 2, x + 3:x + w - 3] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def _poly(box):
    x, y, w, h = box
    return [[x + 1, y + 1, x + w - 1, y + 1, x + w / 2, y + h - 1]]


def _results(bench, kind):
    images = [{"id": i + 1, "file_name": name, "width": 128, "height": 96}
              for i, name in enumerate(bench.database)]
    entries = []
    for i in range(len(bench.database) - 1):  # the last image has no entry
        for j, box in enumerate(_boxes(i)):
            entry = {"image_id": i + 1, "bbox": box, "score": 0.9 - 0.1 * j, "category_id": 1}
            if kind == "rle":
                entry["segmentation"] = _rle(box)
            elif kind == "polygons":
                entry["segmentation"] = _poly(box)
            entries.append(entry)
    return images, entries


def _run(compose_cfg, tmp_path, path, *extra):
    cfg = compose_cfg(*SMALL, *TINY, "cutter=from_file", f"cutter.path={path}", *extra)
    return cfg, run(cfg, run_dir=tmp_path / "run")


@pytest.mark.parametrize("kind", ["boxes", "rle", "polygons"])
def test_a_coco_dataset_dict_runs_end_to_end(compose_cfg, tmp_path, kind):
    bench = _bench(compose_cfg)
    images, entries = _results(bench, kind)
    path = tmp_path / "pseudo.json"
    path.write_text(json.dumps({"images": images, "annotations": entries,
                                "categories": [{"id": 1, "name": "fg"}]}))
    cfg, result = _run(compose_cfg, tmp_path, path, "descriptor.mask_pooling=true")
    report = result.report
    assert report["counts"]["images"] == 6 and report["counts"]["regions"] == 10
    assert report["counts"]["regions_from_file"]["images_without_entries"] == 1
    assert 0.0 <= result.metrics["lab/mAP-all"] <= 1.0
    store = RegionStore.open(report["settings"]["store"])
    first = store.regions_of(bench.database[0])
    np.testing.assert_allclose(first.boxes, [[4, 6, 54, 46], [60, 30, 120, 80]])
    assert len(store.regions_of(bench.database[-1])) == 0
    pixels = store.mask_pixels(0)
    if kind == "boxes":  # a box-only region's mask is its box
        assert pixels[6:46, 4:54].all() and pixels.sum() == 50 * 40
    elif kind == "rle":  # the segmentation, exactly (1-px cells)
        assert pixels[8:44, 7:51].all() and pixels.sum() == 36 * 44
    else:
        assert 0 < pixels.sum() < 50 * 40
    assert store.config["backbone"] is None  # no backbone keys, or is built
    # the vectors are the descriptor's: pooled by mask where there is one
    assert np.allclose(np.linalg.norm(store.vectors(np.float32), axis=1), 1.0, atol=1e-3)


def test_a_results_list_with_the_datasets_images_file_max_regions_and_min_score(compose_cfg, tmp_path):
    bench = _bench(compose_cfg)
    images, entries = _results(bench, "boxes")
    (tmp_path / "instances.json").write_text(json.dumps({"images": images, "annotations": []}))
    (tmp_path / "results.json").write_text(json.dumps(entries))
    _, result = _run(compose_cfg, tmp_path, tmp_path / "results.json",
                     f"cutter.images={tmp_path / 'instances.json'}", "cutter.max_regions=1")
    counts = result.report["counts"]
    assert counts["regions"] == 5 and counts["regions_from_file"]["dropped_max_regions"] == 5
    store = RegionStore.open(result.report["settings"]["store"])
    np.testing.assert_allclose(store.regions_of(bench.database[2]).boxes, [[6, 6, 56, 46]])  # score 0.9
    _, result = _run(compose_cfg, tmp_path, tmp_path / "results.json",
                     f"cutter.images={tmp_path / 'instances.json'}", "cutter.min_score=0.85")
    assert result.report["counts"]["regions"] == 5


def test_the_store_is_keyed_by_the_files_content(compose_cfg, tmp_path):
    bench = _bench(compose_cfg)
    entries = [{"file_name": name, "bbox": [10, 10, 30, 30]} for name in bench.database]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(entries))
    _, first = _run(compose_cfg, tmp_path, path)
    copy = tmp_path / "elsewhere.json"
    copy.write_text(path.read_text())
    _, same = _run(compose_cfg, tmp_path, copy)  # same content, another path: the same store
    assert same.report["settings"]["store"] == first.report["settings"]["store"]
    entries[0]["bbox"] = [12, 10, 30, 30]
    path.write_text(json.dumps(entries))
    _, changed = _run(compose_cfg, tmp_path, path)
    assert changed.report["settings"]["store"] != first.report["settings"]["store"]
    store = RegionStore.open(changed.report["settings"]["store"])
    np.testing.assert_allclose(store.regions_of(bench.database[0]).boxes, [[12, 10, 42, 40]])


def test_from_file_builds_no_backbone(compose_cfg, tmp_path, monkeypatch):
    from claid.config.build import Components

    bench = _bench(compose_cfg)
    path = tmp_path / "results.json"
    path.write_text(json.dumps([{"file_name": n, "bbox": [0, 0, 20, 20]} for n in bench.database]))
    built = []
    original = Components.get
    monkeypatch.setattr(Components, "get", lambda self, name: built.append(name) or original(self, name))
    _run(compose_cfg, tmp_path, path, "cache.tokens=true")
    assert set(built) == {"descriptor"}  # the file is the region source: no backbone, no cutter
    assert not list(tmp_path.glob("**/tokens-*"))


def test_preflight_asks_for_no_backbone_weights(compose_cfg, tmp_path, monkeypatch):
    import huggingface_hub

    from claid.config.preflight import prepare_run

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cfg = compose_cfg("engine.threads=1", "cutter=from_file", "cutter.path=x.json",
                      f"backbone.cache_dir={tmp_path}", "descriptor.pretrained=false")
    assert prepare_run(cfg) == 1  # the backbone's weights are missing, and not needed
