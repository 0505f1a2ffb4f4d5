"""A multirun as a user types it (run.py -m, through Hydra and the sweep-parent
callback) into a temporary MLflow store."""

import subprocess
import sys
from pathlib import Path

import pytest

from claid.tracking.run_table import runs_table, search_runs
from claid.tracking.sweep_parent import swept_keys
from claid.tracking.tables import markdown_table

REPO = Path(__file__).resolve().parents[1]
SMALL = ["backbone=dino_vits8", "backbone.pretrained=false", "descriptor.pretrained=false",
         "dataset.n_scenes=12", "dataset.n_queries=6", "dataset.image_size=[96,128]", "engine.threads=1"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One root for the module: the region store of the first multirun is reused."""
    return tmp_path_factory.mktemp("sweep")


def _multirun(root: Path, name: str, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "run.py", "-m", *SMALL, *overrides, f"paths.root_dir={root}",
         f"tracking.uri=sqlite:///{root}/mlflow.db", f"tracking.artifact_location={root}/art",
         f"hydra.sweep.dir={root}/{name}"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )


def _client(root):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")


@pytest.mark.slow
def test_a_three_point_sweep_has_a_parent_named_children_and_a_summary(store):
    done = _multirun(store, "tau2", "cutter.tau2=0.1,0.2,0.3", "cutter.alpha=0.7")
    assert done.returncode == 0, done.stderr[-3000:]
    client = _client(store)
    experiment = client.get_experiment_by_name("claid")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = search_runs(f"sqlite:///{store}/mlflow.db", "claid")
    parents = [r for r in runs if r.data.tags.get("claid.role") == "sweep"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["claid.swept"] == "cutter.tau2"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3 and len(runs) == 4
    names = sorted(r.info.run_name for r in children)
    assert len(set(names)) == 3
    for value, name in zip(("0.1", "0.2", "0.3"), names):
        assert name.startswith(f"tau2={value}") and len(name) <= 48, name
        assert "pretrained" not in name
    for child in children:
        assert child.info.status == "FINISHED"
        assert not [p for p in child.data.params if p.startswith(("paths.", "tracking."))]
        assert child.data.tags["sweep.cutter.tau2"] == child.data.params["cutter.tau2"]
        assert child.data.tags["backbone"] == "dino_vits8" and child.data.tags["cutter"] == "ksums"
        assert "key/headline" in child.data.metrics and "key/chance" in child.data.metrics
    summary = {a.path for a in client.list_artifacts(parent.info.run_id, "summary")}
    assert {"summary/summary.csv", "summary/summary.md", "summary/summary.html",
            "summary/summary_vs_cutter.tau2.png", "summary/summary_recall_vs_iou.png"} <= summary
    csv_text = Path(client.download_artifacts(parent.info.run_id, "summary/summary.csv")).read_text()
    header, *lines = csv_text.strip().splitlines()
    assert header.split(",")[:7] == ["cutter.tau2", "run", "status", "lab/mAP-all", "chance", "global descr.",
                                     "regions/img"]
    assert [line.split(",")[0] for line in lines] == ["0.1", "0.2", "0.3"]
    # the same table in the terminal at the end of the multirun
    assert "sweep summary" in done.stdout and "lab/mAP-all" in done.stdout
    # one reader: the parent's children through claid.tracking.run_table and `python -m claid runs`
    rows = runs_table(f"sqlite:///{store}/mlflow.db", parent=parent.info.run_id)
    assert sorted(r["cutter.tau2"] for r in rows) == ["0.1", "0.2", "0.3"]
    cli = subprocess.run([sys.executable, "-m", "claid", "runs", "--uri", f"sqlite:///{store}/mlflow.db",
                          "--parent", parent.info.run_id], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert [line.split()[0] for line in cli.stdout.splitlines()[2:]] == ["tau2=0.1", "tau2=0.2", "tau2=0.3"]


@pytest.mark.slow
def test_a_failed_job_is_recorded_and_the_others_are_summarised(store):
    # job 0 runs (its region store is cached by the test above when run first), job 1 has a bad setting
    done = _multirun(store, "fails", "search.save_top=5,0", "tracking.experiment=failing")
    assert done.returncode == 1
    assert "1 of 2 jobs failed" in done.stderr
    assert "Traceback" not in done.stderr  # a settings error reads as its message
    runs = search_runs(f"sqlite:///{store}/mlflow.db", "failing")
    parent = next(r for r in runs if r.data.tags.get("claid.role") == "sweep")
    children = {r.data.tags["sweep.search.save_top"]: r for r in runs if r is not parent}
    assert children["5"].info.status == "FINISHED"
    failed = children["0"]
    assert failed.info.status == "FAILED"
    assert "search.save_top must be >= 1 (got 0)" in failed.data.tags["claid.error"]
    assert "error.txt" in {a.path for a in _client(store).list_artifacts(failed.info.run_id)}
    csv_text = Path(_client(store).download_artifacts(parent.info.run_id, "summary/summary.csv")).read_text()
    assert "FAILED" in csv_text and "save_top must be" in csv_text and "FINISHED" in csv_text
    assert "sweep summary" in done.stdout


def test_swept_keys_come_from_the_command_line_and_the_sweeper_params():
    from omegaconf import OmegaConf

    hydra_cfg = OmegaConf.create({
        "overrides": {"task": ["cutter.tau2=0.1,0.2", "backbone=dino_vits16", "cutter=glob(*)",
                               "+x=range(1,3)", "backbone.pretrained=false"]},
        "sweeper": {"params": {"cutter.init": "seed,random", "cutter.tau1": "0.97"}},
    })
    assert swept_keys(hydra_cfg) == ["cutter.tau2", "cutter", "x", "cutter.init"]


def test_markdown_table_escapes_and_rounds():
    text = markdown_table([{"a": 0.12345, "b": "x|y", "c": None}], ["a", "b", "c"])
    assert text.splitlines() == ["| a | b | c |", "|---|---|---|", "| 0.123 | x\\|y |  |"]


def test_a_two_key_sweep_is_summarised_as_a_heat_map_and_closes_its_parent(tmp_path):
    from mlflow.tracking import MlflowClient

    from claid.tracking.mlflow_run import RunIdentity, Tracker
    from claid.tracking.sweep_parent import summarise_sweep

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("two", artifact_location=str(tmp_path / "art"))
    parent = client.create_run(experiment_id, run_name="sweep", tags={"claid.swept": "cutter.init,cutter.tau2"})
    for init in ("seed", "random"):
        for tau2 in ("0.2", "0.1"):
            tags = {"claid.swept": "cutter.init,cutter.tau2", "sweep.cutter.init": init, "sweep.cutter.tau2": tau2}
            tracker = Tracker(uri=uri, experiment="two", identity=RunIdentity(
                name=f"init={init} tau2={tau2}", tags=tags, parent_run_id=parent.info.run_id))
            with tracker.run():
                tracker.log_metrics({"lab/mAP-all": float(tau2) + (init == "seed"),
                                     "detection/recall-anymatch-box-iou0.5": 0.5,
                                     "detection/recall-anymatch-box-iou0.1": 0.9})
    summary = summarise_sweep(uri, parent.info.run_id, tmp_path / "summary")
    assert [(r["cutter.init"], r["cutter.tau2"]) for r in summary.rows] == [
        ("random", "0.1"), ("random", "0.2"), ("seed", "0.1"), ("seed", "0.2")]
    assert summary.jobs == 4 and summary.failed == 0
    names = {p.name for p in summary.files}
    assert {"summary_heatmap.png", "summary_recall_vs_iou.png", "summary.csv"} <= names
    assert not any(n.startswith("summary_vs_") for n in names)
    closed = client.get_run(parent.info.run_id)
    assert closed.info.status == "FINISHED" and closed.data.metrics["key/headline"] == 1.2
    assert "seed" in summary.text and "lab/mAP-all" in summary.text
