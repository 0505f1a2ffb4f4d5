import pytest

from claid.tracking.mlflow_run import RunIdentity, Tracker
from claid.tracking.run_table import format_table, main, runs_table, search_runs, sort_by_values


def _log(uri, tmp_path, experiment, tau2, fails=False, parent=None, swept=True):
    tags = {"claid.swept": "cutter.tau2", "sweep.cutter.tau2": str(tau2)} if swept else {}
    identity = RunIdentity(name=f"tau2={tau2}", tags=tags, params={"cutter.tau2": str(tau2), "seed": "0"},
                           parent_run_id=parent)
    tracker = Tracker(uri=uri, artifact_location=str(tmp_path / "a"), experiment=experiment, identity=identity)
    try:
        with tracker.run():
            if fails:
                raise RuntimeError("boom")
            tracker.log_metrics({"lab/mAP-all": tau2 * 2, "baseline/shuffled/lab/mAP-all": 0.1})
    except RuntimeError:
        pass
    return tracker.run_id


def test_runs_table_reads_logged_runs_back(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for tau in (0.1, 0.3):
        _log(uri, tmp_path, "sweep", tau)
    rows = runs_table(uri, "sweep", params=["cutter.tau2"], metrics=["lab/mAP-all", "missing"])
    assert sorted((r["cutter.tau2"], r["lab/mAP-all"]) for r in rows) == [("0.1", 0.2), ("0.3", 0.6)]
    assert all(r["missing"] is None for r in rows)
    text = format_table(rows, ["cutter.tau2", "lab/mAP-all"])
    assert "0.600" in text and "cutter.tau2" in text.splitlines()[0]
    with pytest.raises(ValueError, match="no MLflow experiment"):
        runs_table(uri, "nope", params=[], metrics=[])


def test_defaults_are_the_swept_keys_and_key_metrics_and_failures_show_their_error(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    _log(uri, tmp_path, "e", 0.3)
    _log(uri, tmp_path, "e", 0.1, fails=True)
    rows = runs_table(uri, "e", only_finished=False)
    assert [r["status"] for r in rows] == ["FAILED", "FINISHED"]  # newest first
    assert rows[0]["error"] == "RuntimeError: boom" and "error" not in rows[1]
    assert rows[1]["cutter.tau2"] == "0.3" and rows[1]["key/headline"] == 0.6 and rows[1]["key/chance"] == 0.1
    assert [r["cutter.tau2"] for r in runs_table(uri, "e")] == ["0.3"]  # finished only by default
    assert "chance" in format_table(rows).splitlines()[0]


def test_runs_logged_one_by_one_are_told_apart_by_the_params_that_differ(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for tau in (0.1, 0.2):
        _log(uri, tmp_path, "single", tau, swept=False)
    rows = runs_table(uri, "single")
    assert sorted(r["cutter.tau2"] for r in rows) == ["0.1", "0.2"] and "seed" not in rows[0]


def test_a_parent_run_ids_and_filters_select_runs(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    _log(uri, tmp_path, "e", 0.9)  # not in the sweep
    parent = client.create_run(client.get_experiment_by_name("e").experiment_id, run_name="sweep").info.run_id
    ids = [_log(uri, tmp_path, "e", tau, parent=parent) for tau in (0.3, 0.1, 0.2)]
    rows = sort_by_values(runs_table(uri, parent=parent), ["cutter.tau2"])
    assert [r["cutter.tau2"] for r in rows] == ["0.1", "0.2", "0.3"]
    assert [r["run_id"] for r in runs_table(uri, run_ids=ids[:1])] == ids[:1]
    assert [r["cutter.tau2"] for r in runs_table(uri, "e", param_equals={"cutter.tau2": "0.2"})] == ["0.2"]
    assert len(runs_table(uri, "e", tag_equals={"mlflow.parentRunId": parent})) == 3
    assert [r["cutter.tau2"] for r in runs_table(uri, "e", where="metrics.`key/headline` > 1")] == ["0.9"]
    with pytest.raises(ValueError, match="no MLflow run"):
        runs_table(uri, parent="0" * 32)


def test_search_runs_reads_every_page(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for tau in range(5):
        _log(uri, tmp_path, "many", tau / 10)
    original = MlflowClient.search_runs
    calls = []

    def two_per_page(self, experiment_ids, filter_string="", *args, max_results=1000, page_token=None, **kw):
        calls.append(page_token)
        return original(self, experiment_ids, filter_string, *args, max_results=2, page_token=page_token, **kw)

    monkeypatch.setattr(MlflowClient, "search_runs", two_per_page)
    assert len(search_runs(uri, "many")) == 5 and len(calls) == 3


def test_the_runs_command_prints_a_sweep_and_names_bad_input(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for tau in (0.2, 0.1):
        _log(uri, tmp_path, "cli", tau)
    main(["--uri", uri, "--experiment", "cli", "--csv", str(tmp_path / "t.csv")])
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["run_name", "status", "cutter.tau2"]
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("run_id,run_name,status,cutter.tau2")
    with pytest.raises(SystemExit, match="no MLflow experiment 'nope'"):
        main(["--uri", uri, "--experiment", "nope"])
    with pytest.raises(SystemExit, match="--param takes KEY=VALUE"):
        main(["--uri", uri, "--param", "cutter.tau2"])
