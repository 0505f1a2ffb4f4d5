import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from claid.cutters import CutSettings, RegionCutter, cut_regions
from claid.structures import PatchGrid

CUTTER_CONF = Path(__file__).resolve().parents[2] / "conf" / "cutter"
SIGNATURE_KEYS = set(RegionCutter().config())
OPTIONS = sorted(p.stem for p in CUTTER_CONF.glob("*.yaml"))


def _cutter_cfg(name, *overrides):
    """conf/cutter/<name>.yaml as Hydra composes it (its defaults list applied)."""
    with initialize_config_dir(config_dir=str(CUTTER_CONF), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


@pytest.mark.parametrize("name", ["ksums", "ncut", "fixed_depth"])
def test_yaml_spells_out_every_parameter_and_instantiates(name, small_map):
    cfg = _cutter_cfg(name)
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
    ksums = OmegaConf.to_container(_cutter_cfg("ksums"))
    ksums.pop("_target_")
    assert ksums == RegionCutter().config()
    fixed = _cutter_cfg("fixed_depth")
    assert fixed.max_depth == 5 and fixed.filter_dummies is False
    assert _cutter_cfg("ncut").cutter == "ncut"


def test_yaml_base_mirrors_the_python_defaults():
    # one source of truth (CutSettings); the YAML base must say the same, key for key
    base = OmegaConf.to_container(OmegaConf.load(CUTTER_CONF / "_base.yaml"))
    assert base.pop("_target_") == "claid.cutters.RegionCutter"
    python = {f.name: f.default for f in dataclasses.fields(CutSettings)}
    assert base == python
    assert python["cut_root"] == "always"  # the authors' k_sum_main always bisects the root


@pytest.mark.parametrize("name", ["ksums", "ncut", "fixed_depth"])
def test_options_inherit_from_the_base_and_state_only_their_changes(name):
    raw = OmegaConf.to_container(OmegaConf.load(CUTTER_CONF / f"{name}.yaml"))
    assert raw.pop("defaults") == ["_base", "_self_"]
    base = OmegaConf.load(CUTTER_CONF / "_base.yaml")
    assert all(base[key] != value for key, value in raw.items()), raw


@pytest.mark.parametrize("name", OPTIONS)
def test_every_key_of_every_option_is_a_setting(name):
    cfg = _cutter_cfg(name)
    keys = set(cfg.keys()) - {"_target_"}
    if cfg._target_ == "claid.cutters.RegionCutter":
        assert keys == SIGNATURE_KEYS
    else:  # tokencut / maskcut: exactly the fields of their own settings
        from hydra.utils import get_method

        assert keys == {f.name for f in dataclasses.fields(get_method(cfg._target_).SETTINGS)}


def test_unknown_keys_are_an_error():
    with pytest.raises(ConfigCompositionException, match="tau_1"):
        _cutter_cfg("ksums", "tau_1=0.5")  # struct mode: not in the base
    with pytest.raises(InstantiationException, match="tau_1"):
        instantiate(_cutter_cfg("ksums", "+tau_1=0.5"))  # forced in: CutSettings refuses it


def test_overrides_reach_the_cutter():
    cfg = _cutter_cfg("ksums")
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
