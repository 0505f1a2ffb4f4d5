"""Every YAML of every config group composes, and every component instantiates."""

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"

GROUPS = ["dataset", "backbone", "cutter", "descriptor", "index", "engine", "tracking", "paths"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
# component groups whose YAML is a `_target_` to build (datasets need their data: own tests)
BUILT = {"backbone", "cutter", "descriptor", "index", "engine", "tracking"}


def test_every_group_has_options():
    for group in GROUPS:
        assert list((CONF / group).glob("*.yaml")), f"conf/{group}/ is empty"


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_resolves(compose_cfg, group, option):
    cfg = compose_cfg(f"{group}={option}")
    node = cfg[group]
    # everything but Hydra's own runtime values must resolve
    OmegaConf.to_container(node, resolve=True)
    if group in BUILT:
        assert "_target_" in node, f"conf/{group}/{option}.yaml has no _target_"
    if group in {"backbone", "descriptor"}:
        assert "pretrained" in node and "checkpoint" in node


@pytest.mark.parametrize("option", [o for g, o in OPTIONS if g == "cutter"])
def test_cutters_instantiate(compose_cfg, option):
    """Every cutter option is a cutter the cut source builds, or a region source of its
    own (cutter=from_file): the one decision, claid.config.run_settings.region_source."""
    from claid.config.run_settings import region_source
    from claid.engine.cut_source import CutRegions

    source = region_source(compose_cfg(f"cutter={option}"))
    if isinstance(source, CutRegions):
        assert callable(source.networks.get("cutter"))
    else:
        assert option == "from_file" and source.makes_regions and "backbone" not in source.weight_groups()


def test_misspelled_component_key_is_an_error(compose_cfg):
    cfg = compose_cfg("cutter=ksums", "+cutter.tau_1=0.5")
    with pytest.raises(Exception, match="tau_1"):
        instantiate(cfg.cutter)


@pytest.mark.parametrize("group", ["dataset", "backbone", "cutter", "descriptor", "index",
                                   "engine", "tracking"])
def test_unknown_key_in_any_built_group_is_one_settings_error(compose_cfg, group):
    from claid.config.checks import check_settings
    from claid.config.rules import SettingsError

    check_settings(compose_cfg())  # the defaults pass
    with pytest.raises(SettingsError, match=rf"^{group}\.bogus_key is not a setting of "):
        check_settings(compose_cfg(f"+{group}.bogus_key=1"))


def test_short_backbone_names_are_their_full_configs(compose_cfg):
    # `python run.py backbone=dinov2` as users type it
    for alias, full in {"dino": "dino_vitb8", "dinov2": "dinov2_vitb14", "siglip": "siglip_vitb16"}.items():
        assert compose_cfg(f"backbone={alias}").backbone == compose_cfg(f"backbone={full}").backbone, alias
