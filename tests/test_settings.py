"""claid/config/checks.py: a bad value is one SettingsError naming its full key, before any
model is built; every shipped option passes."""

from pathlib import Path

import pytest

from claid.config.checks import check_model_names, check_settings, check_values
from claid.config.rules import SettingsError

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["backbone", "cutter", "descriptor", "index", "engine"]
OPTIONS = [f"{g}={p.stem}" for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


@pytest.mark.parametrize("option", OPTIONS)
def test_every_shipped_option_passes(compose_cfg, option):
    check_settings(compose_cfg(option))


@pytest.mark.parametrize("override,message", [
    ("cutter.tau1=1.5", "cutter.tau1 must be in [0, 1] (got 1.5)"),
    ("cutter.tau1=-0.5", "cutter.tau1 must be in [0, 1] (got -0.5)"),
    ("cutter.tau2=-1", "cutter.tau2 must be in [0, 1) (got -1)"),
    ("cutter.alpha=5", "cutter.alpha must be in [-1, 1) (got 5)"),
    ("cutter.alpha=abc", "cutter.alpha must be a number in [-1, 1) (got 'abc')"),
    ("cutter.init=middle", "cutter.init must be one of seed, random (got 'middle')"),
    ("cutter.max_depth=0", "cutter.max_depth must be >= 1 (got 0)"),
    ("engine.batch_size=0", "engine.batch_size must be >= 1 (got 0)"),
    ("engine.batch_size=true", "engine.batch_size must be an integer >= 1 (got True)"),
    ("engine.shard_size=0", "engine.shard_size must be >= 1 (got 0)"),
    ("engine.num_workers=-1", "engine.num_workers must be >= 0 (got -1)"),
    ("engine.batch_size=2.5", "engine.batch_size must be an integer >= 1 (got 2.5)"),
    ("store.dtype=float64", "store.dtype must be one of float16, float32 (got 'float64')"),
    ("cache.token_dtype=int8", "cache.token_dtype must be one of float16, float32 (got 'int8')"),
    ("descriptor.max_long_side=0", "descriptor.max_long_side must be >= 1 (got 0)"),
    ("index.k=0", "index.k must be >= 1 (got 0)"),
    ("index=ivfpq index.nprobe=0", "index.nprobe must be >= 1 (got 0)"),
    ("backbone.model_name=vit_bogus_patch16", "backbone.model_name: timm has no model 'vit_bogus_patch16'"),
    ("descriptor.model_name=resnet50.no_such_tag", "descriptor.model_name: 'resnet50.no_such_tag'"),
])
def test_bad_value_is_one_error_naming_the_full_key(compose_cfg, override, message):
    cfg = compose_cfg(*override.split())
    with pytest.raises(SettingsError) as info:
        check_settings(cfg)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_keys_a_config_lacks_are_not_checked_and_unknown_keys_are_tolerated():
    # another cutter variant may add keys (cut_root) or drop some: only present keys count
    check_values({"cutter": {"tau1": 0.5, "some_new_key": 3}})
    check_values({"cutter": {"cut_root": "always"}})
    with pytest.raises(SettingsError, match=r"^cutter.cut_root must be one of always, tau1"):
        check_values({"cutter": {"cut_root": "never"}})
    check_values({})  # no groups at all


def test_model_names_are_checked_without_building_anything(monkeypatch):
    import timm

    def no_build(*args, **kwargs):
        raise AssertionError("check_model_names must not create a model")

    monkeypatch.setattr(timm, "create_model", no_build)
    check_model_names({"backbone": {"model_name": "vit_small_patch16_224.dino"},
                       "descriptor": {"model_name": "resnet50.tv_in1k"}})
    check_model_names({"descriptor": {"backbone": {}}})  # token descriptors name no model
    with pytest.raises(SettingsError, match=r"^backbone.model_name must be a timm model name"):
        check_model_names({"backbone": {"model_name": None}})
