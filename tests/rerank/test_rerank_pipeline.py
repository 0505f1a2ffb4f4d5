"""Re-ranking through pipeline.run on the synthetic benchmark (random weights: the
figures show the machinery, not the methods' merit)."""

import json

import pytest

from claid.config.checks import check_settings
from claid.config.rules import SettingsError
from claid.pipeline import run

SMALL = ["backbone=dino_vits8", "backbone.pretrained=false", "descriptor.pretrained=false",
         "engine.batch_size=4", "tracking=none"]
TINY = ["dataset.n_scenes=12", "dataset.n_queries=6", "dataset.image_size=[96,128]"]
FAST_DIFFUSION = ["rerank.diffusion.kd=5", "rerank.diffusion.truncation=60", "rerank.diffusion.kq=3"]


@pytest.mark.parametrize("rerank", ["aqe", "dba", "diffusion", "[dba,aqe]", "superglobal",
                                    "[aqe,superglobal]"])
def test_each_method_runs_end_to_end_and_keeps_before_and_after(compose_cfg, tmp_path, rerank):
    extra = FAST_DIFFUSION if "diffusion" in rerank else []
    cfg = compose_cfg(*SMALL, *TINY, f"rerank={rerank}", *extra)
    result = run(cfg, run_dir=tmp_path / "run")
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    methods = report["settings"]["rerank"]["methods"]
    assert methods == [m for m in ("dba", "aqe", "diffusion", "superglobal") if m in rerank]
    for key in ("lab/mAP-all", "lab/mAP-50"):
        before, after = result.metrics[f"rerank/before/{key}"], result.metrics[f"rerank/after/{key}"]
        assert after == pytest.approx(result.metrics[key])  # the run evaluates the re-ranked lists
        assert result.metrics[f"rerank/gain/{key}"] == pytest.approx(after - before)
    assert "not re-ranked" in report["settings"]["rerank"]["baselines"]
    assert "baseline/global_descriptor/lab/mAP-all" in result.metrics
    # a second run reuses the cached DBA index / offline part
    if "dba" in rerank or "diffusion" in rerank:
        again = run(cfg, run_dir=tmp_path / "run2")
        notes = again.report["settings"]["rerank"]["methods_run"]
        assert all(notes[m]["reused"] for m in ("dba", "diffusion") if m in notes)
        assert again.metrics["lab/mAP-all"] == pytest.approx(result.metrics["lab/mAP-all"])


def test_without_rerank_there_is_no_rerank_column(compose_cfg, tmp_path):
    result = run(compose_cfg(*SMALL, *TINY), run_dir=tmp_path / "run")
    assert not any(k.startswith("rerank/") for k in result.metrics)
    assert "rerank" not in result.report["settings"]


@pytest.mark.parametrize("override, message", [
    ("rerank.aqe.n=0", "rerank.aqe"),
    ("+rerank.aqe.beta=1", "unknown key 'beta'"),
    ("rerank.diffusion.alpha=1.0", "alpha must be < 1"),
    ("rerank.diffusion.aggregate=mean", "aggregate must be one of max, sum"),
    ("rerank.dba.same_image=maybe", "same_image"),
])
def test_bad_settings_stop_before_any_work(compose_cfg, override, message):
    group = override.split(".")[1]
    cfg = compose_cfg(f"rerank={group}", override)
    with pytest.raises(SettingsError, match=message):
        check_settings(cfg)


def test_unknown_method_is_refused(compose_cfg):
    cfg = compose_cfg("+rerank.qe={}")
    with pytest.raises(SettingsError, match="rerank.qe is not a re-ranking method"):
        check_settings(cfg)


@pytest.mark.parametrize("method", ["aqe", "dba", "diffusion"])
def test_yaml_defaults_are_the_settings_defaults(compose_cfg, method):
    """The CLI's defaults (the dataclasses) are the config group's."""
    import dataclasses

    from omegaconf import OmegaConf

    from claid.rerank.settings import SETTINGS

    node = OmegaConf.to_container(compose_cfg(f"rerank={method}").rerank[method])
    assert node == dataclasses.asdict(SETTINGS[method]())


def test_rerank_settings_are_run_params_and_a_tag(compose_cfg):
    from claid.config.run_settings import tracking_setup
    from claid.tracking.run_identity import component_tags

    setup = tracking_setup(compose_cfg("rerank=[dba,aqe]", "rerank.aqe.n=3"))
    assert setup.params["rerank.aqe.n"] == "3" and setup.params["rerank.dba.same_image"] == "exclude"
    assert component_tags(setup.components, rerank=setup.rerank)["rerank"] == "dba+aqe"
    plain = tracking_setup(compose_cfg())
    assert component_tags(plain.components, rerank=plain.rerank)["rerank"] == "none"
