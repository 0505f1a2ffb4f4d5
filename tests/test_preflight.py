import pytest

from claid.config.preflight import prepare_run
from claid.models.weights import WeightsUnavailableError
from claid.pipeline import SettingsError


def test_a_bad_thread_setting_is_a_settings_error(compose_cfg):
    with pytest.raises(SettingsError, match="engine.threads"):
        prepare_run(compose_cfg("engine.threads=0"))


def test_missing_weights_of_both_models_come_in_one_error(compose_cfg, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cfg = compose_cfg("engine.threads=1", f"backbone.cache_dir={tmp_path}", f"descriptor.cache_dir={tmp_path}")
    with pytest.raises(WeightsUnavailableError) as info:
        prepare_run(cfg)
    assert "backbone.pretrained=false" in str(info.value) and "descriptor.pretrained=false" in str(info.value)
    no_weights = compose_cfg("engine.threads=1", "backbone.pretrained=false", "descriptor.pretrained=false")
    assert prepare_run(no_weights) == 1
