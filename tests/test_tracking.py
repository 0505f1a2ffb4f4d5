import pytest

from claid.config.run_settings import tracking_setup
from claid.tracking.mlflow_run import EXPERIMENT_KIND, Tracker, flatten_config, key_metrics
from claid.tracking.run_identity import (
    git_commit,
    record_failed_job,
    run_identity,
    run_name,
    run_params,
)


def test_flatten_config_nests_with_dots_and_stringifies():
    flat = flatten_config({"cutter": {"tau1": 0.97, "init": "seed"}, "seed": 0, "ks": [50, 100]})
    assert flat == {"cutter.tau1": "0.97", "cutter.init": "seed", "seed": "0", "ks": "[50, 100]"}


def test_flatten_config_cuts_overlong_values():
    flat = flatten_config({"long": "x" * 10_000})
    assert len(flat["long"]) <= 6000 and flat["long"].endswith("...")


def test_git_commit_outside_a_checkout(tmp_path):
    assert git_commit(tmp_path) == "unknown"


def test_run_params_drop_paths_run_dirs_and_tracking():
    params = run_params({
        "paths": {"root_dir": "/a", "output_dir": "/a/run"},
        "tracking": {"uri": "sqlite:///x", "experiment": "claid"},
        "dataset": {"root": "/data/x", "n_scenes": 16},
        "cutter": {"tau2": 0.2},
    })
    assert params == {"dataset.n_scenes": "16", "cutter.tau2": "0.2"}


def test_run_name_puts_swept_values_first_and_drops_noise():
    overrides = ["backbone=dino_vits16", "backbone.pretrained=false", "descriptor.pretrained=false",
                 "paths.root_dir=/tmp/x", "hydra.run.dir=/y", "engine.threads=1", "cutter.tau2=0.3"]
    assert run_name(overrides, swept=["cutter.tau2"]) == "tau2=0.3 · dino_vits16"
    assert run_name([]) == "defaults"
    assert run_name(["backbone.pretrained=false"], fallback="vit · ksums") == "vit · ksums"
    long = run_name(["cutter.tau2=0.3", *(f"dataset.key{i}=value{i}" for i in range(20))], swept=["cutter.tau2"])
    assert len(long) <= 48 and long.startswith("tau2=0.3") and long.endswith("…")
    # a swept key that looks like noise still names the run
    assert run_name(["backbone.seed=3", "cutter=ncut"], swept=["backbone.seed"]) == "seed=3 · ncut"


def test_key_metrics_follow_the_protocols_headline():
    lab = {"lab/mAP-all": 0.3, "lab/mAP-50": 0.2, "baseline/shuffled/lab/mAP-all": 0.1,
           "baseline/global_descriptor/lab/mAP-all": 0.25, "count/regions_per_image": 4.0}
    assert key_metrics(lab) == {"key/headline": 0.3, "key/chance": 0.1, "key/global": 0.25,
                                "key/regions_per_image": 4.0}
    assert key_metrics({"revisited/medium/mAP": 0.4, "revisited/hard/mAP": 0.1}) == {"key/headline": 0.4}
    assert key_metrics({"lab/mAP-all": 0.330605158}) == {"key/headline": 0.3306}
    assert key_metrics({"time/x_s": 1.0}) == {}


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_tracker_logs_params_metrics_artifacts(tmp_path):
    uri = f"sqlite:///{tmp_path}/db/mlflow.db"
    tracker = Tracker(uri=uri, artifact_location=str(tmp_path / "art"), experiment="t")
    artifact = tmp_path / "metrics.json"
    artifact.write_text("{}")
    params = {f"p{i}": i for i in range(130)}  # more than one MLflow batch
    params["cutter"] = {"tau1": 0.97}
    with tracker.run(params, tags={"k": "v"}):
        tracker.log_metrics({"lab/mAP-all": 0.5, "gldv2/AP@1000": 0.25})
        tracker.log_artifact(artifact)
    client = _client(uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["cutter.tau1"] == "0.97" and run.data.params["p129"] == "129"
    assert run.data.metrics["lab/mAP-all"] == 0.5 and run.data.metrics["key/headline"] == 0.5
    assert run.data.metrics["gldv2/AP_at_1000"] == 0.25
    assert run.data.tags["k"] == "v" and run.data.tags["claid.headline"] == "lab/mAP-all"
    assert [a.path for a in client.list_artifacts(tracker.run_id)] == ["metrics.json"]
    experiment = client.get_experiment_by_name("t")
    assert experiment.tags["mlflow.experimentKind"] == EXPERIMENT_KIND["mlflow.experimentKind"]


def test_an_experiment_made_before_gets_the_kind_tag(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = _client(uri)
    client.create_experiment("old", artifact_location=str(tmp_path / "art"))
    with Tracker(uri=uri, experiment="old").run({"a": 1}):
        pass
    assert client.get_experiment_by_name("old").tags["mlflow.experimentKind"] == "custom_model_development"


def test_tracker_records_the_error_of_a_crashed_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri=uri, artifact_location=str(tmp_path / "art"), experiment="t")
    with pytest.raises(RuntimeError) as info, tracker.run({"a": 1}):
        raise RuntimeError("boom: the cutter fell over\nsecond line")
    client = _client(uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["claid.error"] == "RuntimeError: boom: the cutter fell over"
    assert info.value.mlflow_run_id == tracker.run_id
    text = (tmp_path / "art").rglob("error.txt").__next__().read_text()
    assert "Traceback" in text and "second line" in text


def test_disabled_tracker_is_a_no_op(tmp_path):
    tracker = Tracker(enabled=False, uri=f"sqlite:///{tmp_path}/x.db")
    with tracker.run({"a": 1}):
        tracker.log_metrics({"m": 1.0})
    assert tracker.run_id is None and not (tmp_path / "x.db").exists()


def test_run_identity_outside_hydra_names_the_components(compose_cfg):
    cfg = compose_cfg("backbone=dino_vits16", "cutter.tau2=0.2")
    identity = run_identity(tracking_setup(cfg))
    assert identity.name.startswith("vit_small_patch16_224.dino · ksums · res") and len(identity.name) <= 48
    assert identity.tags["backbone"] == "vit_small_patch16_224.dino" and identity.tags["cutter"] == "ksums"
    assert identity.tags["dataset"] == "synthetic" and identity.tags["study"] == "none"
    assert identity.tags["index"] == "Flat" and identity.tags["descriptor"] == "resnet50.tv_in1k"
    assert len(identity.tags["mlflow.source.git.commit"]) in (7, 40) or identity.tags[
        "mlflow.source.git.commit"] == "unknown"
    assert identity.params["cutter.tau2"] == "0.2"
    assert not any(k.startswith(("paths.", "tracking.")) or k.endswith(".root") for k in identity.params)
    assert identity.parent_run_id is None
    assert run_identity(tracking_setup(compose_cfg("tracking.run_name=mine"))).name == "mine"


def test_a_job_that_failed_before_its_run_gets_a_failed_run(compose_cfg, tmp_path):
    cfg = compose_cfg("tracking.experiment=fails")
    err = ValueError("search.save_top must be an integer >= 1, got 0")
    run_id = record_failed_job(tracking_setup(cfg), err)
    run = _client(f"sqlite:///{tmp_path}/mlflow.db").get_run(run_id)
    assert run.info.status == "FAILED" and "save_top" in run.data.tags["claid.error"]
    assert record_failed_job(tracking_setup(cfg), err) == run_id  # recorded once, not twice
