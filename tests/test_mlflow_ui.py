"""The MLflow UI as a researcher opens it after a sweep, in headless Chromium:
the runs table shows the jobs nested under their parent with the key metric
columns, and the parent's summary page shows the table.

Needs the system Chromium (`apt-get install -y chromium`; .ci/run installs it) and
Playwright for Python (dev extra). Without Chromium the test is skipped with that
reason, unless CLAID_REQUIRE_BROWSER=1 (set by .ci/run) makes it fail instead.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]




def _sweep(tmp_path) -> tuple[str, str]:
    """A logged two-job sweep (one finished, one failed) with its summary."""
    from mlflow.tracking import MlflowClient

    from claid.tracking.mlflow_run import EXPERIMENT_KIND, RunIdentity, Tracker
    from claid.tracking.sweep_parent import summarise_sweep

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("ui", artifact_location=str(tmp_path / "art"), tags=EXPERIMENT_KIND)
    parent = client.create_run(experiment_id, run_name="sweep tau2=0.1,0.2",
                               tags={"claid.role": "sweep", "claid.swept": "cutter.tau2", "dataset": "synthetic"})
    for tau2, fails in (("0.1", False), ("0.2", True)):
        identity = RunIdentity(name=f"tau2={tau2} · dino_vits16", parent_run_id=parent.info.run_id,
                               tags={"claid.swept": "cutter.tau2", "sweep.cutter.tau2": tau2},
                               params={"cutter.tau2": tau2})
        tracker = Tracker(uri=uri, experiment="ui", identity=identity)
        try:
            with tracker.run():
                if fails:
                    raise ValueError("search.save_top must be an integer >= 1, got 0")
                tracker.log_metrics({"lab/mAP-all": 0.3, "baseline/shuffled/lab/mAP-all": 0.2,
                                     "count/regions_per_image": 3.0})
        except ValueError:
            pass
    summarise_sweep(uri, parent.info.run_id, tmp_path / "summary")
    return uri, parent.info.run_id


@pytest.mark.slow
@pytest.mark.browser
def test_the_runs_table_and_the_sweep_summary_in_a_browser(chromium, tmp_path):
    uri, _ = _sweep(tmp_path)
    out = tmp_path / "screens"
    done = subprocess.run(
        [sys.executable, "experiments/mlflow_ui/screenshots.py", "--uri", uri, "--experiment", "ui",
         "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads((out / "page_text.json").read_text())
    assert "/runs" in seen["experiment_url"]
    table = seen["runs_table"]
    for text in ("sweep tau2=0.1,0.2", "tau2=0.1 · dino_vits16", "tau2=0.2 · dino_vits16", "key/headline",
                 "sweep.cutter.tau2"):
        assert text in table, text
    summary = seen["sweep_summary_html"]
    assert "lab/mAP-all" in summary and "FAILED" in summary and "save_top must be" in summary
    assert (out / "runs_table.png").stat().st_size > 10_000 and (out / "sweep_summary.png").stat().st_size > 10_000
