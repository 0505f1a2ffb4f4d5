from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from claid.cutters import RegionCutter, cut_regions
from claid.structures import PatchGrid

CUTTER_CONF = Path(__file__).resolve().parents[2] / "conf" / "cutter"
SIGNATURE_KEYS = set(RegionCutter().config())


@pytest.mark.parametrize("name", ["ksums", "ncut", "fixed_depth"])
def test_yaml_spells_out_every_parameter_and_instantiates(name, small_map):
    cfg = OmegaConf.load(CUTTER_CONF / f"{name}.yaml")
    assert cfg._target_ == "claid.cutters.RegionCutter"
    assert set(cfg.keys()) - {"_target_"} == SIGNATURE_KEYS
    cutter = instantiate(cfg)
    grid = PatchGrid(tokens=small_map.tokens, grid=small_map.grid, patch_size=16)
    tree = cutter(grid)
    params = OmegaConf.to_container(cfg)
    params.pop("_target_")
    expected = cut_regions(small_map.tokens, small_map.grid, **params)
    np.testing.assert_array_equal(tree.masks, expected.masks)


def test_yaml_defaults_are_the_paper_defaults():
    ksums = OmegaConf.to_container(OmegaConf.load(CUTTER_CONF / "ksums.yaml"))
    ksums.pop("_target_")
    assert ksums == RegionCutter().config()
    fixed = OmegaConf.load(CUTTER_CONF / "fixed_depth.yaml")
    assert fixed.max_depth == 5 and fixed.filter_dummies is False
    assert OmegaConf.load(CUTTER_CONF / "ncut.yaml").cutter == "ncut"


def test_overrides_reach_the_cutter():
    cfg = OmegaConf.load(CUTTER_CONF / "ksums.yaml")
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(["tau1=0.95", "init=random", "tau2=0.3"]))
    settings = instantiate(cfg).settings
    assert (settings.tau1, settings.init, settings.tau2) == (0.95, "random", 0.3)


def test_misspelled_or_bad_keys_fail_at_construction():
    with pytest.raises(TypeError):
        RegionCutter(tau_1=0.9)
    with pytest.raises(TypeError):
        RegionCutter("ksums")  # keyword-only
    with pytest.raises(ValueError, match="tau2"):
        RegionCutter(tau2=2.0)


def test_cutter_boxes_map_to_pixels(small_map):
    grid = PatchGrid(tokens=small_map.tokens, grid=small_map.grid, patch_size=8, scale=(2.0, 2.0))
    tree = RegionCutter()(grid)
    pixels = grid.patch_boxes_to_pixels(tree.boxes)
    np.testing.assert_allclose(pixels, tree.boxes * 16.0)
    assert "RegionCutter(cutter='ksums'" in repr(RegionCutter())
