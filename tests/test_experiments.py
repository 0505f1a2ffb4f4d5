"""Every paper overlay in conf/experiment composes, its sweep names real config keys,
and (where it needs no real dataset) its first sweep point runs on tiny synthetic data."""

from pathlib import Path

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
    cfg = compose_cfg(f"experiment={name}", *TINY, *small, *point)
    result = run(cfg, run_dir=tmp_path / "run")
    assert 0.0 <= result.metrics["lab/mAP-all"] <= 1.0
