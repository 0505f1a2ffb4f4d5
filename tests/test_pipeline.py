"""End to end on generated data: run.py's pipeline with small random-weight networks."""

import json
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image

from claid.config.run_settings import run_settings
from claid.pipeline import run

SMALL = [
    "backbone=dino_vits8",
    "backbone.pretrained=false",
    "descriptor.pretrained=false",
    "engine.batch_size=4",
]
TINY_SYNTHETIC = ["dataset.n_scenes=12", "dataset.n_queries=6", "dataset.image_size=[96,128]"]


def _mlflow_run(tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("claid")
    (run_,) = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    return client, run_


def test_synthetic_end_to_end_then_index_sweep_reuses_regions(compose_cfg, tmp_path):
    cfg = compose_cfg(*SMALL, *TINY_SYNTHETIC)
    first = run(cfg, run_dir=tmp_path / "run1")

    report = json.loads((tmp_path / "run1" / "metrics.json").read_text())
    for key in ("lab/mAP-50", "lab/mAP-all", "baseline/shuffled/lab/mAP-all",
                "baseline/global_descriptor/lab/mAP-all", "loc/mIoU-standard",
                "detection/recall-anymatch-box-iou0.5"):
        assert 0.0 <= first.metrics[key] <= 1.0, key
    assert report["protocol"]["family"] == "lab"
    assert report["settings"]["whole_image_region"] is False
    assert report["counts"]["images"] == 12 and report["counts"]["regions"] > 0
    for name in ("results_grid", "hierarchy_0", "recall_vs_iou"):
        assert Path(first.artifacts[name]).stat().st_size > 0
    saved = json.loads((tmp_path / "run1" / "rankings.json").read_text())
    assert len(saved["queries"]) == report["counts"]["queries"]
    for entry in saved["queries"]:
        query = next(q for q in instantiate(cfg.dataset).queries if q.qid == entry["qid"])
        assert [r["relevant"] for r in entry["results"]] == [r["image"] in query.positives for r in entry["results"]]
        scores = [r["score"] for r in entry["results"]]
        assert scores == sorted(scores, reverse=True) and len(scores) <= saved["top"]

    client, logged = _mlflow_run(tmp_path)
    assert logged.data.metrics["lab/mAP-all"] == pytest.approx(first.metrics["lab/mAP-all"])
    assert logged.data.params["cutter.tau1"] == "0.97"
    # which weights: random here (pretrained=false); a file would be named with its SHA-256
    assert logged.data.params["weights.backbone.file"] == "random"
    assert first.report["settings"]["weights"]["weights.descriptor.file"] == "random"
    assert {"metrics.json", "rankings.json", "results_grid.png"} <= {a.path for a in client.list_artifacts(logged.info.run_id)}

    # a later stage's parameter changes: the region store is reused, not re-extracted
    second = run(compose_cfg(*SMALL, *TINY_SYNTHETIC, "index=flat_whiten", "search.whole_image_region=true"),
                 run_dir=tmp_path / "run2")
    stores = sorted((tmp_path / "outputs" / "cache").glob("regions-*"))
    assert len(stores) == 1
    assert second.report["settings"]["store"] == first.report["settings"]["store"]
    assert second.metrics["time/extract_s"] < first.metrics["time/extract_s"] / 3
    assert second.report["settings"]["whole_image_region"] is True
    assert second.report["settings"]["index"] != first.report["settings"]["index"]

    # the index dir answers new queries: a database image finds itself first
    import claid

    bench = instantiate(cfg.dataset)
    image_id = bench.database[0]
    (ranking,) = claid.search([bench.path(image_id)], index_dir=first.report["settings"]["index"], top=5)
    assert ranking.images[0] == image_id
    assert ranking.boxes.shape == (len(ranking.images), 4)


def test_another_query_split_reuses_the_regions_of_the_same_database(compose_cfg, tmp_path):
    first = run(compose_cfg(*SMALL, *TINY_SYNTHETIC, "tracking=none"), run_dir=tmp_path / "all")
    single = run(compose_cfg(*SMALL, *TINY_SYNTHETIC, "tracking=none", "dataset.split=single"),
                 run_dir=tmp_path / "single")
    assert single.report["counts"]["queries"] < first.report["counts"]["queries"]
    assert single.report["settings"]["store"] == first.report["settings"]["store"]
    assert len(list((tmp_path / "outputs" / "cache").glob("regions-*"))) == 1
    assert len(list((tmp_path / "outputs" / "cache").glob("queries-*.npy"))) == 2  # queries differ


def _manifest(root: Path) -> None:
    from skimage import data

    root.mkdir()
    photos = {"cat.png": data.chelsea(), "coffee.png": data.coffee(), "rocket.png": data.rocket(),
              "astronaut.png": data.astronaut()}
    for name, array in photos.items():
        Image.fromarray(array).resize((128, 96)).save(root / name)
    Image.new("RGB", (128, 96), (128, 128, 128)).save(root / "flat.png")  # no structure: 0 regions
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.fromarray(data.chelsea()).resize((128, 96)).save(root / "query_cat.png")
    (root / "queries.jsonl").write_text(
        json.dumps({"image": "query_cat.png", "box": [10, 5, 100, 90], "positives": ["cat.png"], "junk": []})
        + "\n"
    )


@pytest.mark.parametrize("whole_image_region", [False, True])
def test_manifest_with_zero_region_and_corrupt_images(compose_cfg, tmp_path, whole_image_region):
    root = tmp_path / "photos"
    _manifest(root)
    # cut_root=tau1: the flat image's tokens (positional embeddings only) are all alike, so its
    # root is not cut and it keeps 0 regions; the default (always, as the authors' code)
    # bisects that root too
    cfg = compose_cfg(*SMALL, "dataset=manifest", f"dataset.root={root}", "cutter.cut_root=tau1",
                      f"search.whole_image_region={str(whole_image_region).lower()}")
    result = run(cfg, run_dir=tmp_path / "run")
    report = result.report
    assert report["skipped"] and report["skipped"][0][0] == "broken.jpg"
    assert report["counts"]["images"] == 5  # every readable database image, flat.png included
    assert report["settings"]["whole_image_region"] is whole_image_region
    assert 0.0 <= result.metrics["lab/mAP-all"] <= 1.0
    from claid.store import RegionStore

    store = RegionStore.open(report["settings"]["store"])
    counts = dict(zip(store.image_ids, np.bincount(store.region_image(), minlength=len(store.image_ids))))
    assert counts["flat.png"] == 0


def test_cutter_sweep_recuts_cached_tokens(compose_cfg, tmp_path, monkeypatch):
    from claid.config.build import Components
    from claid.engine.extraction_stage import extract_stage
    from claid.store import RegionStore

    tokens = [*SMALL, *TINY_SYNTHETIC, "cache.tokens=true", "tracking=none", "search.global_baseline=false"]
    run(compose_cfg(*tokens, "cutter.tau2=0.2"), run_dir=tmp_path / "a")
    swept = run(compose_cfg(*tokens, "cutter.tau2=0.3"), run_dir=tmp_path / "b")
    store = RegionStore.open(swept.report["settings"]["store"])
    assert store.summary["token_sources_rank0"] == {"backbone": 0, "cache": 12}
    assert store.summary["map_sources_rank0"] == {"descriptor": 0, "cache": 12}

    # the extraction of a third cutter setting builds neither network
    built = []
    real_get = Components.get
    monkeypatch.setattr(Components, "get", lambda self, name: built.append(name)
                        or real_get(self, name))
    cfg = compose_cfg(*tokens, "cutter.tau2=0.4")
    bench = instantiate(cfg.dataset)
    settings = run_settings(cfg)
    recut = extract_stage(settings.extraction, bench, settings.regions, settings.cache_dir)
    assert built == ["cutter"] and recut.summary["new_images"] == 12

    # the same cutter with the backbone run afresh (another cache) gives the same regions
    fresh = run(
        compose_cfg(*SMALL, *TINY_SYNTHETIC, "tracking=none", "search.global_baseline=false",
                    "cutter.tau2=0.3", f"paths.cache_dir={tmp_path}/other_cache"),
        run_dir=tmp_path / "c",
    )
    reference = RegionStore.open(fresh.report["settings"]["store"])
    assert reference.image_ids == store.image_ids
    np.testing.assert_array_equal(reference.boxes(), store.boxes())
    np.testing.assert_allclose(reference.vectors(np.float32), store.vectors(np.float32), atol=2e-3)


def test_missing_dataset_stops_with_where_to_get_it(compose_cfg, tmp_path):
    from claid.datasets import DatasetNotFoundError

    cfg = compose_cfg(*SMALL, "dataset=instre", f"dataset.root={tmp_path}/nowhere", "tracking=none")
    with pytest.raises(DatasetNotFoundError, match="Expected layout"):
        run(cfg, run_dir=tmp_path / "run")


def test_missing_weights_stop_with_one_clear_message(compose_cfg, tmp_path, monkeypatch):
    from claid.models.weights import WeightsUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    cfg = compose_cfg("backbone=dino_vits16", "backbone.pretrained=true", *TINY_SYNTHETIC, "tracking=none")
    with pytest.raises(WeightsUnavailableError, match="vit_small_patch16_224.dino"):
        run(cfg, run_dir=tmp_path / "run")


class _TextDescriptor:
    """Stands in for a SigLIP-like descriptor: a text maps to a fixed unit vector."""

    dim = 4

    def encode_text(self, texts):
        return np.array([[1.0, 0.0, 0.0, 0.0] if "cat" in t else [0.0, 1.0, 0.0, 0.0] for t in texts], np.float32)

    def describe_query(self, image, box):
        return np.array([0.0, 0.0, 1.0, 0.0], np.float32)


def test_query_stage_encodes_text_queries_and_refuses_what_it_cannot(compose_cfg, tmp_path):
    from dataclasses import replace
    from types import SimpleNamespace

    from claid.descriptors.queries import query_stage
    from claid.structures import Benchmark, Query

    bench = Benchmark(name="t", root=str(tmp_path), database=["a.jpg"],
                      queries=[Query(image=None, text="a cat", qid="t0"), Query(image=None, text="a dog", qid="t1")],
                      protocol={"family": "gldv2", "query": "crop"})
    settings = run_settings(compose_cfg("tracking=none")).queries
    vectors = query_stage(settings, bench, _TextDescriptor, tmp_path)
    np.testing.assert_array_equal(vectors[:, :2], [[1, 0], [0, 1]])

    other = replace(bench, queries=[Query(image=None, text="x", qid="new")])  # another cache key
    with pytest.raises(ValueError, match="no text this descriptor can encode"):
        query_stage(settings, other, lambda: SimpleNamespace(dim=4), tmp_path)


def test_collection_without_queries_is_indexed_for_later_search(compose_cfg, tmp_path):
    import claid

    root = tmp_path / "photos"
    _manifest(root)
    (root / "queries.jsonl").unlink()
    result = run(compose_cfg(*SMALL, "dataset=manifest", f"dataset.root={root}", "tracking=none"),
                 run_dir=tmp_path / "run")
    assert "lab/mAP-all" not in result.metrics
    (ranking,) = claid.search([root / "coffee.png"], index_dir=result.report["settings"]["index"], top=3)
    assert ranking.images[0] == "coffee.png" and ranking.scores[0] > 0.99

    # the same box rules as queries.jsonl: no silent clipping, the query is named
    index_dir = result.report["settings"]["index"]
    width, height = Image.open(root / "coffee.png").size
    for box, message in [((10, 10, width + 50, 40), "outside"), ((30, 10, 30, 40), "empty"),
                         ((width + 1, 0, width + 9, 8), "outside")]:
        with pytest.raises(ValueError, match=f"query 0 .*coffee.png.*{message}"):
            claid.search([root / "coffee.png"], index_dir=index_dir, boxes=[box])
    (inside,) = claid.search([root / "coffee.png"], index_dir=index_dir, boxes=[(0, 0, width, height)], top=1)
    assert inside.images == ["coffee.png"]
    assert claid.search([], index_dir=index_dir) == []
    with pytest.raises(ValueError, match="no text encoder"):
        claid.search_text(["a cup of coffee"], index_dir=index_dir)


def test_coco_layout_reports_detector_recall_on_masks_and_boxes(compose_cfg, tmp_path):
    from skimage import data

    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, annotations = [], []
    for i, photo in enumerate([data.chelsea(), data.coffee(), data.astronaut()]):
        name = f"{i:012d}.jpg"
        Image.fromarray(photo).resize((128, 96)).save(root / "val2017" / name)
        images.append({"id": i + 1, "file_name": name, "height": 96, "width": 128})
        x, y, w, h = 20, 10, 60, 50  # one square object per image, as a polygon
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 17, "iscrowd": 0,
                            "bbox": [x, y, w, h], "area": w * h,
                            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": [{"id": 17, "name": "cat"}]}))

    result = run(compose_cfg(*SMALL, "dataset=coco_val2017", f"dataset.root={root}", "tracking=none"),
                 run_dir=tmp_path / "run")
    curve = [result.metrics[f"detection/recall-anymatch-mask-iou{t:g}"] for t in (0.1, 0.5, 0.9)]
    # the same curve recomputed here from the stored pixel masks and pycocotools' own masks
    from pycocotools.coco import COCO

    from claid.store import RegionStore

    coco = COCO(str(root / "annotations" / "instances_val2017.json"))
    store = RegionStore.open(result.report["settings"]["store"])
    region_image = np.asarray(store.region_image())
    best = []
    for i, image_id in enumerate(store.image_ids):
        (img,) = [im for im in coco.dataset["images"] if im["file_name"] == image_id]
        (ann,) = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        gt = coco.annToMask(ann).astype(bool)
        ious = [0.0]
        for r in np.flatnonzero(region_image == i):
            pred = store.mask_pixels(int(r))
            ious.append((pred & gt).sum() / (pred | gt).sum())
        best.append(max(ious))
    expected = [float(np.mean(np.array(best) > t)) for t in (0.1, 0.5, 0.9)]
    assert curve == pytest.approx(expected)
    assert "detection/recall-anymatch-box-iou0.5" in result.metrics
    assert result.report["recall_vs_iou"]["rule"] == "any-match (lab), masks"
    assert "index" not in result.report["settings"]  # detection benchmarks are not searched
    assert Path(result.artifacts["recall_vs_iou"]).exists()


def test_unreadable_query_image_stops_with_the_query_named(compose_cfg, tmp_path):
    from types import SimpleNamespace

    from claid.datasets import DatasetFormatError
    from claid.descriptors.queries import check_query_images, query_stage
    from claid.structures import Benchmark, Query

    Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "q.jpg", quality=95)
    blob = (tmp_path / "q.jpg").read_bytes()
    (tmp_path / "q.jpg").write_bytes(blob[: len(blob) // 2])  # header intact, pixels cut
    bench = Benchmark(name="t", root=str(tmp_path), database=["a.jpg"],
                      queries=[Query(image="q.jpg", qid="q7")], protocol={"family": "lab", "query": "crop"})
    with pytest.raises(DatasetFormatError, match=r"query 'q7' \(q.jpg\): truncated"):
        query_stage(run_settings(compose_cfg("tracking=none")).queries, bench,
                    lambda: SimpleNamespace(dim=4), tmp_path)
    with pytest.raises(DatasetFormatError, match=r"query 'q7' \(q.jpg\): truncated"):
        check_query_images(bench)  # what run() calls before extracting anything


def test_a_bad_query_image_stops_the_run_before_extraction(compose_cfg, tmp_path, monkeypatch):
    import claid.engine.extraction_stage as engine_stage
    from claid.datasets import DatasetFormatError

    root = tmp_path / "photos"
    _manifest(root)
    blob = (root / "query_cat.png").read_bytes()
    (root / "query_cat.png").write_bytes(blob[: len(blob) // 2])  # header intact, pixels cut
    monkeypatch.setattr(engine_stage, "extract_stage", lambda *a, **k: pytest.fail("extraction ran"))
    with pytest.raises(DatasetFormatError, match="query_cat.png"):
        run(compose_cfg(*SMALL, "dataset=manifest", f"dataset.root={root}", "tracking=none"),
            run_dir=tmp_path / "run")


def test_a_run_that_cannot_fit_in_memory_stops_before_extraction(compose_cfg, tmp_path, monkeypatch):
    import claid.engine.extraction_stage as engine_stage
    from claid.config.rules import SettingsError

    monkeypatch.setattr(engine_stage, "extract_stage", lambda *a, **k: pytest.fail("extraction ran"))
    with pytest.raises(SettingsError, match=r"estimated memory .* exceeds the limit of 0.5 GiB"):
        run(compose_cfg(*SMALL, *TINY_SYNTHETIC, "tracking=none", "search.max_memory_gb=0.5"),
            run_dir=tmp_path / "run")


def test_whole_image_vectors_come_from_the_store_and_a_second_pass_agrees(compose_cfg, tmp_path, monkeypatch):
    from claid.store import RegionStore

    first = run(compose_cfg(*SMALL, *TINY_SYNTHETIC, "tracking=none"), run_dir=tmp_path / "stored")
    cache = tmp_path / "outputs" / "cache"
    assert not list(cache.glob("wholeimage-*"))  # no second pass over the images
    # a store that predates stored whole-image vectors: the stage describes every image again
    monkeypatch.setattr(RegionStore, "whole_image_rows", lambda self: None)
    second = run(compose_cfg(*SMALL, *TINY_SYNTHETIC, "tracking=none"), run_dir=tmp_path / "recomputed")
    assert len(list(cache.glob("wholeimage-*.npy"))) == 1
    assert second.metrics["time/whole_image_s"] > first.metrics["time/whole_image_s"]
    for key in ("lab/mAP-all", "lab/mAP-50"):
        assert second.metrics[f"baseline/global_descriptor/{key}"] == pytest.approx(
            first.metrics[f"baseline/global_descriptor/{key}"], abs=0.02)
