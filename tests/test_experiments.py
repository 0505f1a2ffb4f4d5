"""Every paper overlay in conf/experiment composes, its sweep names real config keys,
and (where it needs no real dataset) its first sweep point runs on tiny synthetic data."""

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from claid.pipeline import run

CONF = Path(__file__).resolve().parents[1] / "conf"
OVERLAYS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
NEEDS_REAL_DATA = {"table3_multi_instance", "table6_image_retrieval", "table10_ilias", "lab_protocol"}
TINY = [
    "backbone.pretrained=false", "descriptor.pretrained=false", "tracking=none",
    "dataset.n_scenes=12", "dataset.n_queries=6", "dataset.image_size=[96,128]",
]  # fmt: skip


#: overlays whose published input size would take minutes on CPU: a smaller one here
SMALLER = {"maskcut_published": ["backbone.square_size=128"]}  # 16 x 16 patches, not 60 x 60


def _first_point(cfg) -> list[str]:
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    return [f"{key}={str(values).split(',')[0]}" for key, values in params.items()]


@pytest.mark.parametrize("name", OVERLAYS)
def test_overlay_composes_and_sweeps_known_keys(compose_cfg, name):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        full = compose(config_name="config", overrides=[f"experiment={name}"], return_hydra_config=True)
    params = OmegaConf.select(full, "hydra.sweeper.params") or {}
    groups = {p.name for p in CONF.iterdir() if p.is_dir()}
    for key in params:
        assert key in groups or OmegaConf.select(full, key) is not None, f"{name} sweeps unknown key {key}"
    assert full.tracking.experiment == name


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in OVERLAYS if n not in NEEDS_REAL_DATA])
def test_overlay_first_point_runs_on_synthetic(compose_cfg, tmp_path, name):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        full = compose(config_name="config", overrides=[f"experiment={name}"], return_hydra_config=True)
    point = _first_point(full)
    small = [] if any(p.startswith("backbone=") for p in point) else ["backbone=dino_vits8"]
    cfg = compose_cfg(f"experiment={name}", *TINY, *small, *point, *SMALLER.get(name, []))
    result = run(cfg, run_dir=tmp_path / "run")
    assert 0.0 <= result.metrics["lab/mAP-all"] <= 1.0


def _ilias_layout(root: Path) -> None:
    """Two instances (query photo + box + text, two positives each) and two distractors."""
    from PIL import Image
    from skimage import data

    photos = [("cat", data.chelsea()), ("cup", data.coffee())]
    for i, (name, photo) in enumerate(photos):
        base = root / "ilias_core" / f"{name}_{i:03d}"
        for sub in ("query", "pos"):
            (base / sub).mkdir(parents=True)
        small = Image.fromarray(photo).resize((128, 96))
        small.save(base / "query" / f"Q{i:03d}_00.jpg")
        (base / "query" / f"Q{i:03d}_00_bbox.txt").write_text("20 10 80 70\n")
        (base / "query" / f"T{i:03d}.txt").write_text(f"a photo of a {name}\n")
        for z in range(2):
            small.rotate(8 * (z + 1)).save(base / "pos" / f"P{i:03d}_{z:02d}.jpg")
    (root / "yfcc100m").mkdir()
    for j, photo in enumerate([data.astronaut(), data.rocket(), data.camera()]):
        Image.fromarray(photo).resize((128, 96)).save(root / "yfcc100m" / f"{j}.jpg")
    (root / "image_ids").mkdir()  # table10_ilias keeps the distractors of the mini-ILIAS id list
    (root / "image_ids" / "mini_ilias_yfcc100m_ids.txt").write_text("0\n1\n")


def _word_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["</s>", "<unk>", "a", "photo", "of", "cat", "cup"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="</s>", unk_token="<unk>").save_pretrained(folder)


@pytest.mark.slow
def test_table_x_runs_image_and_text_queries_on_an_ilias_layout(compose_cfg, tmp_path):
    root = tmp_path / "ilias"
    _ilias_layout(root)
    _word_tokenizer(tmp_path / "tokenizer")
    results = {}
    for kind in ("image", "text"):
        cfg = compose_cfg("experiment=table10_ilias", f"dataset.root={root}", f"dataset.queries={kind}",
                          "backbone.pretrained=false", "descriptor.pretrained=false",
                          f"descriptor.tokenizer={tmp_path / 'tokenizer'}", "tracking=none")
        results[kind] = run(cfg, run_dir=tmp_path / kind)
    for kind, result in results.items():
        assert result.report["counts"]["queries"] == 2, kind
        for k in (50, 100, 1000):
            assert 0.0 <= result.metrics[f"gldv2/mAP-at-{k}"] <= 1.0
    assert results["text"].report["settings"]["text_queries"] == 2
    assert results["image"].report["settings"]["text_queries"] == 0
    # one region store for both query kinds: the database is the same
    assert results["text"].report["settings"]["store"] == results["image"].report["settings"]["store"]

    # text search after the run, from Python and the CLI, ranks as the run did
    import json

    import claid
    from claid.retrieval import main as search_cli

    saved = json.loads((tmp_path / "text" / "rankings.json").read_text())["queries"]
    cat = next(q for q in saved if q["text"] == "a photo of a cat")
    index_dir = results["text"].report["settings"]["index"]
    (ranking,) = claid.search_text(["a photo of a cat"], index_dir=index_dir, top=3)
    assert ranking.images == [r["image"] for r in cat["results"][:3]]
    np.testing.assert_allclose(ranking.scores, [r["score"] for r in cat["results"][:3]], atol=1e-5)
    search_cli(["--index-dir", index_dir, "--text", "a photo of a cat", "--top", "3", "--json"])

    # and claid serve's text box on that text-capable index answers the same ranking
    from fastapi.testclient import TestClient

    from claid.serve import create_app

    client = TestClient(create_app(index_dir))
    assert client.get("/api/health").json()["text"] is True
    body = client.post("/api/search", json={"text": "a photo of a cat", "top": 3}).json()
    assert body["query"]["kind"] == "text" and body["forward_ms"] > 0
    assert [r["image_id"] for r in body["results"]] == ranking.images
    np.testing.assert_allclose([r["score"] for r in body["results"]], ranking.scores, atol=1e-5)
    bad = client.post("/api/search", json={"text": "  ", "top": 3})
    assert bad.status_code == 400 and "non-empty" in bad.json()["error"]


def test_render_reads_any_experiment_and_plots_a_sweep(tmp_path):
    import os
    import subprocess
    import sys

    from claid.tracking.mlflow_run import RunIdentity, Tracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for tau2 in ("0.3", "0.1"):
        identity = RunIdentity(name=f"tau2={tau2}", tags={"claid.swept": "cutter.tau2", "sweep.cutter.tau2": tau2,
                                                          "dataset": "synthetic"}, params={"cutter.tau2": tau2})
        with (tracker := Tracker(uri=uri, experiment="my_sweep", identity=identity)).run():
            tracker.log_metrics({"lab/mAP-all": float(tau2), "baseline/shuffled/lab/mAP-all": 0.05})
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "experiments/paper_tables/render.py", "my_sweep", "--uri", uri,
         "--plot", str(tmp_path / "p.png")],
        cwd=repo, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("run_name"))
    assert lines[header].split()[:3] == ["run_name", "cutter.tau2", "headline"]
    assert [line.split()[1] for line in lines[header + 2 : header + 4]] == ["0.1", "0.3"]  # sorted by tau2
    assert (tmp_path / "p.png").stat().st_size > 5000
