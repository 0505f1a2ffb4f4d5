"""Every conf/index/*.yaml builds an index and searches with its k."""

import inspect
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from claid.index import RegionIndex, build_index, search_images
from claid.index.ondisk_build import build_ondisk_index

from .conftest import clustered_vectors

CONF = Path(__file__).resolve().parents[2] / "conf" / "index"
PRESETS = sorted(CONF.glob("*.yaml"))


def test_presets_exist():
    assert {p.stem for p in PRESETS} >= {"flat", "flat_whiten", "ivfpq", "hnsw"}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_keys_are_build_arguments(preset):
    cfg = OmegaConf.to_container(OmegaConf.load(preset))
    target = cfg.pop("_target_")
    assert cfg.pop("_partial_") is True
    accepted = set(inspect.signature(RegionIndex.train).parameters) - {"cls", "training_vectors"}
    if target == "claid.index.ondisk_build.build_ondisk_index":  # train settings + its own
        own = {"parts", "work_dir", "keep_parts", "add_block", "flat_file", "vectors"}
        assert set(inspect.signature(build_ondisk_index).parameters) == accepted | own
        accepted |= own - {"flat_file", "vectors"}
    else:
        assert target == "claid.index.build_index"
        assert set(inspect.signature(build_index).parameters) == accepted | {"vectors", "add_block"}
    assert set(cfg) - {"k"} <= accepted
    assert "k" in cfg and "factory" in cfg


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_builds_and_searches(preset):
    cfg = OmegaConf.load(preset)
    k = cfg.pop("k")
    # 300-D so that the 256-D whitening presets fit; 600 regions is too few for
    # IVF1024 training, so ivfpq must fall back to exact search, on the record.
    vectors = clustered_vectors(600, 300, seed=4)
    index = instantiate(cfg)(vectors)  # as the pipeline builds it
    if cfg["factory"].startswith("IVF"):
        assert index.meta["fallback"]["requested"] == cfg["factory"]
    region_image = np.arange(600) // 3
    rankings = search_images(
        index,
        vectors[:4],
        region_image,
        np.zeros((600, 4), np.float32),
        [f"{i}.jpg" for i in range(200)],
        ["a", "b", "c", "d"],
        k=k,
    )
    assert [r.images[0] for r in rankings] == ["0.jpg", "0.jpg", "0.jpg", "1.jpg"]
