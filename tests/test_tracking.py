import pytest

from claid.tracking import Tracker, flatten_config, git_commit


def test_flatten_config_nests_with_dots_and_stringifies():
    flat = flatten_config({"cutter": {"tau1": 0.97, "init": "seed"}, "seed": 0, "ks": [50, 100]})
    assert flat == {"cutter.tau1": "0.97", "cutter.init": "seed", "seed": "0", "ks": "[50, 100]"}


def test_flatten_config_cuts_overlong_values():
    flat = flatten_config({"long": "x" * 10_000})
    assert len(flat["long"]) <= 6000 and flat["long"].endswith("...")


def test_git_commit_outside_a_checkout(tmp_path):
    assert git_commit(tmp_path) == "unknown"


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
    run = _client(uri).get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["cutter.tau1"] == "0.97" and run.data.params["p129"] == "129"
    assert run.data.metrics["lab/mAP-all"] == 0.5
    assert run.data.metrics["gldv2/AP_at_1000"] == 0.25
    assert run.data.tags["k"] == "v" and "git_commit" in run.data.tags
    names = [a.path for a in _client(uri).list_artifacts(tracker.run_id)]
    assert names == ["metrics.json"]


def test_tracker_marks_a_crashed_run_failed(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri=uri, artifact_location=str(tmp_path / "art"), experiment="t")
    with pytest.raises(RuntimeError), tracker.run({"a": 1}):
        raise RuntimeError("boom")
    assert _client(uri).get_run(tracker.run_id).info.status == "FAILED"


def test_disabled_tracker_is_a_no_op(tmp_path):
    tracker = Tracker(enabled=False, uri=f"sqlite:///{tmp_path}/x.db")
    with tracker.run({"a": 1}):
        tracker.log_metrics({"m": 1.0})
    assert tracker.run_id is None and not (tmp_path / "x.db").exists()


def test_runs_table_reads_logged_runs_back(tmp_path):
    from claid.reports import format_table, runs_table

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for tau in (0.1, 0.3):
        tracker = Tracker(uri=uri, artifact_location=str(tmp_path / "a"), experiment="sweep")
        with tracker.run({"cutter": {"tau2": tau}}):
            tracker.log_metrics({"lab/mAP-all": tau * 2})
    rows = runs_table(uri, "sweep", params=["cutter.tau2"], metrics=["lab/mAP-all", "missing"])
    assert sorted((r["cutter.tau2"], r["lab/mAP-all"]) for r in rows) == [("0.1", 0.2), ("0.3", 0.6)]
    assert all(r["missing"] is None for r in rows)
    text = format_table(rows, ["cutter.tau2", "lab/mAP-all"])
    assert "0.600" in text and "cutter.tau2" in text.splitlines()[0]
    with pytest.raises(ValueError, match="no MLflow experiment"):
        runs_table(uri, "nope", params=[], metrics=[])
