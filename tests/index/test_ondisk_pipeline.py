"""index=ivfpq_ondisk in a run: the index stage builds on-disk lists into its index
dir, reuses them, and searches them; a whole run with the preset completes."""

import json
from pathlib import Path

import faiss
import numpy as np
import pytest
from omegaconf import OmegaConf

from claid.index import RegionIndex
from claid.index.index_dir import LISTS_FILE
from claid.index.index_dir_check import index_dir_problems
from claid.index.index_stage import IndexSettings, index_stage, search_stage
from claid.index.search_table import RegionTable
from claid.structures import Query

from .conftest import clustered_vectors
from .test_configs import CONF


def _table(vectors):
    n = len(vectors)
    return RegionTable(None, vectors, np.arange(n) // 3, np.zeros((n, 4), np.float32),
                       [f"{i}.jpg" for i in range((n + 2) // 3)], vectors.shape[1])


def test_index_stage_builds_the_ondisk_preset_into_its_index_dir_and_reuses_it(tmp_path):
    node = OmegaConf.to_container(OmegaConf.load(CONF / "ivfpq_ondisk.yaml"))
    k = node.pop("k")
    # the preset as written, with a codebook small enough for 3000 generated rows
    node.update(factory="IVF16,PQ8x4", whitening_dim=24, train_size=2000, parts=3)
    vectors = clustered_vectors(3000, 32, seed=5)
    table = _table(vectors)
    descriptor = {**OmegaConf.to_container(OmegaConf.load(CONF.parent / "descriptor" / "resnet50.yaml")),
                  "pretrained": False, "dim": 32}
    settings = IndexSettings(node=node, seed=1, k=k, descriptor=descriptor)
    index, index_dir = index_stage(settings, table, {"store": "generated"}, tmp_path)
    meta = json.loads((index_dir / "index.json").read_text())
    assert meta["lists"] == "ondisk" and meta["parts"] == 3 and not meta["fallback"]
    assert LISTS_FILE in json.loads((index_dir / "search.json").read_text())["files"]
    assert index_dir_problems(index_dir) == []
    assert not list(tmp_path.glob(f"{index_dir.name}.parts/part-*"))  # merged, then removed
    queries = [Query(qid=str(i), image=f"{i // 3}.jpg") for i in range(0, 30, 3)]
    first = search_stage(index, table, vectors[0:30:3], queries, k=k)

    reused, same_dir = index_stage(settings, table, {"store": "generated"}, tmp_path)
    assert same_dir == index_dir and reused is not index
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(reused.faiss_index).invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists) and reused.ntotal == 3000
    again = search_stage(reused, table, vectors[0:30:3], queries, k=k)
    assert [(list(r.images), r.scores.tolist()) for r in again] == [
        (list(r.images), r.scores.tolist()) for r in first]
    assert RegionIndex.load(index_dir).search(vectors[:5], 10)[1].min() >= 0


@pytest.mark.slow
def test_run_with_the_ondisk_preset_completes(compose_cfg, tmp_path):
    from claid.pipeline import run

    overrides = ["backbone=dino_vits16", "backbone.pretrained=false", "descriptor.pretrained=false",
                 "dataset.n_scenes=12", "dataset.n_queries=6", "dataset.image_size=[96,128]",
                 "tracking=none", "index=ivfpq_ondisk"]
    result = run(compose_cfg(*overrides), run_dir=tmp_path / "run")
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 <= result.metrics["lab/mAP-all"] <= 1.0
    # a dozen images give too few regions for IVF1024: exact search, on the record
    meta = json.loads((Path(report["settings"]["index"]) / "index.json").read_text())
    assert meta["fallback"]["requested"] == OmegaConf.load(CONF / "ivfpq_ondisk.yaml").factory


def test_claid_serve_opens_the_ondisk_index_dir(tmp_path):
    from claid.serve.engine import SearchEngine

    node = OmegaConf.to_container(OmegaConf.load(CONF / "ivfpq_ondisk.yaml"))
    node.pop("k")
    node.update(factory="IVF16,PQ8x4", whitening_dim=24, train_size=2000, parts=2)
    descriptor = {**OmegaConf.to_container(OmegaConf.load(CONF.parent / "descriptor" / "resnet50.yaml")),
                  "pretrained": False, "dim": 32}
    vectors = clustered_vectors(3000, 32, seed=5)
    index, index_dir = index_stage(IndexSettings(node=node, seed=1, k=100, descriptor=descriptor),
                                   _table(vectors), {"store": "generated"}, tmp_path)
    engine = SearchEngine(index_dir, threads=1)
    try:
        lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(engine.index.faiss_index).invlists)
        assert isinstance(lists, faiss.OnDiskInvertedLists)
        answer = engine.rank(vectors[30], top=5, k=100)
        assert answer and answer[0]["image_id"] == "10.jpg"
    finally:
        engine.close()
