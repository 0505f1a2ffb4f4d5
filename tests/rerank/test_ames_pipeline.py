"""rerank=ames in a run: the local descriptors of the database are extracted (DINOv2 with
registers, random weights here), stored, and the head of every list is re-ordered."""

import json

import pytest

from claid.pipeline import run

SMALL = ["backbone=dino_vits16", "backbone.pretrained=false", "descriptor.pretrained=false",
         "dataset.n_scenes=12", "dataset.n_queries=6", "dataset.image_size=[96,128]", "tracking=none"]


@pytest.mark.slow
def test_a_run_with_ames_reranks_with_the_local_descriptor_store(compose_cfg, tmp_path):
    cfg = compose_cfg(*SMALL, "rerank=ames", "rerank.ames.pretrained=false", "rerank.ames.query_k=50",
                      "rerank.ames.database_k=20")
    result = run(cfg, run_dir=tmp_path / "run")
    notes = result.report["settings"]["rerank"]
    assert notes["methods"] == ["ames"] and "ames" in notes["methods_run"]
    ames = notes["methods_run"]["ames"]
    assert ames["bytes_per_image"] > 0
    assert any(k.startswith("rerank/after/") for k in result.metrics)
    stores = list((tmp_path / "outputs" / "cache").glob("local-*"))
    assert len(stores) == 1  # one local-descriptor store beside the region store

    # a second run reuses the store: nothing is extracted again
    again = run(cfg, run_dir=tmp_path / "again")
    assert again.metrics["rerank/after/lab/mAP-all"] == pytest.approx(result.metrics["rerank/after/lab/mAP-all"])
    saved = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert saved["settings"]["rerank"]["methods_run"]["ames"]["store"] == ames["store"]


def test_missing_ames_weights_stop_before_any_work(compose_cfg, tmp_path, monkeypatch):
    from claid.config.preflight import prepare_run
    from claid.models.weights import WeightsUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    cfg = compose_cfg(*SMALL, "rerank=ames", f"rerank.ames.cache_dir={tmp_path}/nowhere", "engine.threads=1")
    # the DINOv2-registers backbone AMES reads (not the run's ViT-S/16), then AMES's own files
    with pytest.raises(WeightsUnavailableError, match="vit_base_patch14_reg4_dinov2"):
        prepare_run(cfg)
    ready = compose_cfg(*SMALL, "rerank=ames", f"rerank.ames.cache_dir={tmp_path}/nowhere", "engine.threads=1",
                        "backbone=dinov2_vitb14_reg", "backbone.pretrained=false")
    with pytest.raises(WeightsUnavailableError, match="ames"):
        prepare_run(ready)
