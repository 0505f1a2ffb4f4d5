"""MLflow experiment tracking: one MLflow run per `run.py` job.

Logs the flattened resolved config as parameters, the git commit, metrics (keys carry
the protocol name, e.g. ``lab/mAP-all``), stage timings and artifacts (files written
in the Hydra run dir). The default store is an embedded SQLite file (no server);
``tracking.uri`` points at any MLflow server instead.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# MLflow refuses longer parameter values; longer ones are cut and marked.
_MAX_PARAM_LEN = 6000


def flatten_config(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> {"a.b.c": "value"} with lists rendered as strings.

    Example: {"cutter": {"tau1": 0.97}} -> {"cutter.tau1": "0.97"}.
    """
    flat: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=f"{name}."))
        else:
            text = str(value)
            flat[name] = text if len(text) <= _MAX_PARAM_LEN else text[: _MAX_PARAM_LEN - 3] + "..."
    return flat


def git_commit(repo_dir: str | os.PathLike | None = None) -> str:
    """The HEAD commit of the repository holding ``repo_dir`` (+"-dirty" when the tree
    has uncommitted changes), or "unknown" outside a checkout."""
    cwd = str(repo_dir or Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


class Tracker:
    """Thin shell over MLflow; every method is a no-op when tracking is disabled.

    Args:
        enabled: log to MLflow at all.
        uri: tracking URI (``sqlite:///path/mlflow.db`` for the embedded store, or a server).
        artifact_location: where a newly created experiment keeps its artifacts.
        experiment: experiment name.
        run_name: MLflow run name (None: MLflow picks one).
        n_figure_images: images whose region hierarchy is drawn for the run.
        n_figure_queries: image queries shown in the run's results grid.
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        uri: str | None = None,
        artifact_location: str | None = None,
        experiment: str = "claid",
        run_name: str | None = None,
        n_figure_images: int = 4,
        n_figure_queries: int = 6,
    ) -> None:
        self.enabled = enabled
        self.uri = uri
        self.artifact_location = artifact_location
        self.experiment = experiment
        self.run_name = run_name
        self.n_figure_images = int(n_figure_images)
        self.n_figure_queries = int(n_figure_queries)
        self.run_id: str | None = None
        self._mlflow = None

    @contextmanager
    def run(self, params: Mapping[str, Any], tags: Mapping[str, str] | None = None) -> Iterator[Tracker]:
        """Open an MLflow run, log ``params`` (flattened) and ``tags``; close it on exit,
        marked FAILED if the body raised."""
        if not self.enabled:
            yield self
            return
        import mlflow

        self._mlflow = mlflow
        if self.uri:
            if self.uri.startswith("sqlite:///"):
                Path(self.uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
            mlflow.set_tracking_uri(self.uri)
        if mlflow.get_experiment_by_name(self.experiment) is None:
            mlflow.create_experiment(self.experiment, artifact_location=self.artifact_location)
        mlflow.set_experiment(self.experiment)
        active = mlflow.start_run(run_name=self.run_name)
        self.run_id = active.info.run_id
        status = "FAILED"
        try:
            flat = flatten_config(params)
            items = list(flat.items())
            for start in range(0, len(items), 100):  # MLflow caps a batch at 100 params
                mlflow.log_params(dict(items[start : start + 100]))
            mlflow.set_tags({"git_commit": git_commit(), **(tags or {})})
            yield self
            status = "FINISHED"
        finally:
            mlflow.end_run(status=status)
            self._mlflow = None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics; names may contain '/', '-', '.', '@'."""
        if self._mlflow is None:
            return
        clean = {k.replace("@", "_at_"): float(v) for k, v in metrics.items() if v is not None}
        self._mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path: str | os.PathLike, subdir: str | None = None) -> None:
        """Copy a file of the run dir into the MLflow run's artifacts."""
        if self._mlflow is None:
            return
        self._mlflow.log_artifact(str(path), artifact_path=subdir)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if self._mlflow is None:
            return
        self._mlflow.set_tags(dict(tags))
