"""Every engine profile (conf/engine/*.yaml, composed as Hydra does) is a partial
call of extract_regions: its keys are extract_regions keywords, except those the run
applies itself (engine.threads)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra.utils import instantiate

from claid.config.checks import RUN_KEYS
from claid.engine import extract_regions
from claid.engine.cut_pool import CUT_POOLS

ENGINE_CONF = Path(__file__).resolve().parents[2] / "conf" / "engine"


@pytest.mark.parametrize("profile", sorted(p.stem for p in ENGINE_CONF.glob("*.yaml")))
def test_engine_profiles_are_extract_regions_keywords(compose_cfg, profile):
    engine = compose_cfg(f"engine={profile}").engine
    assert engine._target_ == "claid.engine.extract_regions" and engine._partial_ is True
    keys = {k for k in engine if not k.startswith("_")} - set(RUN_KEYS)
    accepted = set(inspect.signature(extract_regions).parameters)
    assert keys <= accepted, f"{profile}: unknown keys {sorted(keys - accepted)}"
    assert {"num_nodes", "cut_pool", "profile"} <= keys
    built = instantiate({k: v for k, v in engine.items() if k not in RUN_KEYS})
    assert built.func is extract_regions and built.keywords["num_nodes"] == 1


def test_the_gpu_profile(compose_cfg):
    gpu = compose_cfg("engine=gpu").engine
    assert gpu.accelerator == "gpu" and gpu.precision == "bf16-mixed"
    assert gpu.num_workers is None and gpu.cut_workers is None  # from the CPU affinity
    assert gpu.cut_pool in CUT_POOLS and gpu.profile is False
    assert gpu.threads == compose_cfg().engine.threads  # the rest comes from default.yaml
