"""One MLflow run per job: the :class:`Tracker` (a thin shell over MLflow; every method
is a no-op when tracking is off), the ``key/*`` metrics a runs table shows whatever the
protocol, and how a failed run records its error.

Experiments created here are tagged ``mlflow.experimentKind=custom_model_development``
so that MLflow 3's UI opens on the runs table, not on the GenAI overview. What a run is
called, tagged and parametrised with is :mod:`claid.tracking.run_identity`.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# MLflow refuses longer parameter values; longer ones are cut and marked.
_MAX_PARAM_LEN = 6000


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


# headline metric of each protocol, first match wins (names as scores_to_metrics logs them)
HEADLINE_METRICS = (
    "lab/mAP-all",
    "revisited/medium/mAP",
    "trapezoid/mAP",
    "gldv2/mAP-at-1000",
    "detection/AR-greedy-100",
    "detection/recall-anymatch-mask-iou0.5",
)


def flatten_config(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> {"a.b.c": "value"} with lists rendered as strings.

    Example: {"cutter": {"tau1": 0.97}} -> {"cutter.tau1": "0.97"}.
    """
    flat: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=f"{name}."))
        else:
            text = str(value)
            flat[name] = text if len(text) <= _MAX_PARAM_LEN else text[: _MAX_PARAM_LEN - 3] + "..."
    return flat


def key_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The handful of numbers a runs table needs, under one ``key/`` prefix whatever
    the protocol: ``key/headline`` (the first of :data:`HEADLINE_METRICS` present),
    ``key/chance`` and ``key/global`` (the same metric for the shuffled rankings and
    the one-global-descriptor baseline) and ``key/regions_per_image``, rounded to 4
    decimals so that a runs-table column shows them whole (the exact values stay
    under their own names). Empty when the run has none of them."""
    out: dict[str, float] = {}
    headline = headline_metric(metrics)
    if headline is not None:
        out["key/headline"] = round(float(metrics[headline]), 4)
        for baseline, name in (("shuffled", "key/chance"), ("global_descriptor", "key/global")):
            value = metrics.get(f"baseline/{baseline}/{headline}")
            if value is not None:
                out[name] = round(float(value), 4)
        before = metrics.get(f"rerank/before/{headline}")  # a re-ranked run: claid/rerank/rerank_stage.py
        if before is not None:
            out["key/before_rerank"] = round(float(before), 4)
            out["key/rerank_gain"] = round(float(metrics[headline]) - float(before), 4)
    if "count/regions_per_image" in metrics:
        out["key/regions_per_image"] = round(float(metrics["count/regions_per_image"]), 4)
    return out


def headline_metric(metrics: Mapping[str, Any]) -> str | None:
    """The name of the run's headline metric (see :data:`HEADLINE_METRICS`), or None."""
    names = {name.replace("_at_", "@") for name in metrics} | set(metrics)
    return next((name for name in HEADLINE_METRICS if name in names), None)


# ----------------------------------------------------------------------------- identity
@dataclass
class RunIdentity:
    """How a job shows up in MLflow: its name, tags and parameters."""

    name: str
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    parent_run_id: str | None = None


# ----------------------------------------------------------------------------- MLflow
def open_experiment(mlflow_module, name: str, artifact_location: str | None) -> str:
    """Create (or find) experiment ``name``, make sure it carries the
    model-development kind tag, make it current; returns its id."""
    experiment = mlflow_module.get_experiment_by_name(name)
    if experiment is None:
        experiment_id = mlflow_module.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_KIND)
    else:
        experiment_id = experiment.experiment_id
        if "mlflow.experimentKind" not in experiment.tags:  # made before claid tagged experiments
            mlflow_module.MlflowClient().set_experiment_tag(experiment_id, *next(iter(EXPERIMENT_KIND.items())))
    mlflow_module.set_experiment(experiment_id=experiment_id)
    return experiment_id


def set_tracking_uri(mlflow_module, uri: str | None) -> None:
    """Point MLflow at ``uri``, creating the folder of an embedded SQLite store."""
    if not uri:
        return
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow_module.set_tracking_uri(uri)


def error_text(err: BaseException) -> str:
    """The one line a runs table shows for a failed run: type and message."""
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {message}"[:5000]


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
        identity: tags, parameters and parent run of the job (:func:`run_identity`);
            its name is used when ``run_name`` is None.
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
        identity: RunIdentity | None = None,
    ) -> None:
        self.enabled = enabled
        self.uri = uri
        self.artifact_location = artifact_location
        self.experiment = experiment
        self.n_figure_images = int(n_figure_images)
        self.n_figure_queries = int(n_figure_queries)
        self.identity = identity or RunIdentity(name=run_name or "")
        self.run_name = run_name or self.identity.name or None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._mlflow = None

    @contextmanager
    def run(
        self, params: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None
    ) -> Iterator[Tracker]:
        """Open an MLflow run with the identity's tags and parameters (``params``,
        flattened, when given instead) plus ``tags``; close it on exit. A body that
        raises marks the run FAILED and records the error on it (tag ``claid.error``,
        artifact ``error.txt`` with the traceback); the exception carries the run id
        as ``mlflow_run_id``."""
        if not self.enabled:
            yield self
            return
        import mlflow

        self._mlflow = mlflow
        set_tracking_uri(mlflow, self.uri)
        self.experiment_id = open_experiment(mlflow, self.experiment, self.artifact_location)
        all_tags = {**self.identity.tags, **(tags or {})}
        if self.identity.parent_run_id:
            all_tags["mlflow.parentRunId"] = self.identity.parent_run_id
        active = mlflow.start_run(run_name=self.run_name, tags=all_tags)
        self.run_id = active.info.run_id
        status = "FAILED"
        try:
            mlflow.log_params(flatten_config(params) if params is not None else self.identity.params)
            yield self
            status = "FINISHED"
        except BaseException as err:
            record_error(mlflow.MlflowClient(), self.run_id, err)
            raise
        finally:
            mlflow.end_run(status=status)
            self._mlflow = None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics (names may contain '/', '-', '.', '@') and their
        ``key/*`` copies (:func:`key_metrics`)."""
        if self._mlflow is None:
            return
        clean = {k.replace("@", "_at_"): float(v) for k, v in metrics.items() if v is not None}
        clean.update(key_metrics(metrics))
        self._mlflow.log_metrics(clean, step=step)
        headline = headline_metric(metrics)
        if headline is not None:
            self._mlflow.set_tag("claid.headline", headline)

    def log_artifact(self, path: str | os.PathLike, subdir: str | None = None) -> None:
        """Copy a file of the run dir into the MLflow run's artifacts."""
        if self._mlflow is None:
            return
        self._mlflow.log_artifact(str(path), artifact_path=subdir)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Add tags to the open run."""
        if self._mlflow is None:
            return
        self._mlflow.set_tags(dict(tags))

    def log_params(self, params: Mapping[str, str]) -> None:
        """Add parameters to the open run (e.g. the weight files' hashes)."""
        if self._mlflow is None or not params:
            return
        self._mlflow.log_params(dict(params))


def record_error(client, run_id: str, err: BaseException) -> None:
    """Put ``err`` on run ``run_id``: tag ``claid.error`` (one line) and an
    ``error.txt`` artifact with the traceback; mark ``err`` with the run id."""
    client.set_tag(run_id, "claid.error", error_text(err))
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    client.log_text(run_id, text, "error.txt")
    try:
        err.mlflow_run_id = run_id  # type: ignore[attr-defined]
    except AttributeError:  # an exception type with __slots__
        pass
