"""A run reuses only what verifies: tampered store shards, query vectors and index
files are caught, rebuilt with a warning, and the scores equal an untouched run's."""

import json
import os
import warnings
from pathlib import Path

import numpy as np

from claid.pipeline import run

SMALL = ["backbone=dino_vits8", "backbone.pretrained=false", "descriptor.pretrained=false",
         "engine.batch_size=4", "engine.shard_size=4", "tracking=none", "search.shuffle_draws=20",
         "dataset.n_scenes=12", "dataset.n_queries=6", "dataset.image_size=[96,128]"]


def _scores(result):
    return {k: v for k, v in result.metrics.items() if not k.startswith("time/")}


def test_tampered_artifacts_are_rebuilt_and_the_scores_match(compose_cfg, tmp_path):
    cfg = compose_cfg(*SMALL)
    first = run(cfg, run_dir=tmp_path / "run1")
    cache = tmp_path / "outputs" / "cache"
    (store_dir,) = cache.glob("regions-*")
    shard = sorted((store_dir / "shards").iterdir())[1]
    vectors = np.load(shard / "vectors.npy")
    np.save(shard / "vectors.npy", vectors[::-1].copy())  # permuted rows, same size
    (query_file,) = cache.glob("queries-*.npy")
    queries = np.load(query_file)
    np.save(query_file, np.roll(queries, 1, axis=0))  # other vectors of the same shape
    index_dir = Path(first.report["settings"]["index"])
    (index_dir / "index.faiss").write_bytes(b"garbage")
    dead_temp = cache / f".index-zz.tmp-{2 ** 22 + 7}-0123abcd"  # a killed build's leftover
    dead_temp.mkdir()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = run(compose_cfg(*SMALL), run_dir=tmp_path / "run2")
    messages = " | ".join(str(w.message) for w in caught)
    assert f"shard {shard.name} is damaged" in messages and "vectors.npy" in messages
    assert f"rebuilding {query_file}" in messages
    # the store changed content (a shard re-extracted): its index is keyed anew
    assert second.report["settings"]["index"] != first.report["settings"]["index"]
    assert _scores(second) == _scores(first)
    assert (store_dir / "damaged" / shard.name).is_dir()
    assert not dead_temp.exists()
    summary = json.loads((store_dir / "manifest.json").read_text())["summary"]
    assert summary["new_images"] == 4  # only the dropped shard's images were redone
    assert os.listdir(store_dir / "staging") == []
