"""cutter=tokencut / cutter=maskcut run end to end through the pipeline (random weights)."""

import json

import pytest

from claid.pipeline import run

SMALL = [
    "backbone=dino_vits8",
    "backbone.pretrained=false",
    "descriptor.pretrained=false",
    "engine.batch_size=4",
]
TINY = ["dataset.n_scenes=6", "dataset.n_queries=3", "dataset.image_size=[96,128]"]


@pytest.mark.parametrize("name, most", [("tokencut", 1), ("maskcut", 3)])
def test_single_cut_cutters_run_end_to_end(compose_cfg, tmp_path, name, most):
    result = run(compose_cfg(*SMALL, *TINY, f"cutter={name}"), run_dir=tmp_path / name)
    report = json.loads((tmp_path / name / "metrics.json").read_text())
    assert report["counts"]["images"] == 6
    assert 6 <= report["counts"]["regions"] <= 6 * most
    assert 0.0 <= result.metrics["lab/mAP-all"] <= 1.0
