"""Every engine profile (conf/engine/*.yaml) is a set of extract_regions keywords:
the pipeline passes ``**cfg.engine`` straight through."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from claid.engine import extract_regions
from claid.engine.cut_pool import CUT_POOLS

ENGINE_CONF = Path(__file__).resolve().parents[2] / "conf" / "engine"


@pytest.mark.parametrize("path", sorted(ENGINE_CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_engine_profiles_are_extract_regions_keywords(path):
    keys = set(OmegaConf.to_container(OmegaConf.load(path)))
    accepted = set(inspect.signature(extract_regions).parameters)
    assert keys <= accepted, f"{path.name}: unknown keys {sorted(keys - accepted)}"
    assert {"num_nodes", "cut_pool", "profile"} <= keys


def test_the_gpu_profile():
    gpu = OmegaConf.load(ENGINE_CONF / "gpu.yaml")
    assert gpu.accelerator == "gpu" and gpu.precision == "bf16-mixed"
    assert gpu.num_workers is None and gpu.cut_workers is None  # from the CPU affinity
    assert gpu.cut_pool in CUT_POOLS and gpu.profile is False
