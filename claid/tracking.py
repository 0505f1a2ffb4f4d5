"""MLflow experiment tracking: one MLflow run per `run.py` job.

What a run carries (so a sweep reads at a glance in the MLflow UI):

* a short **name** built from what was overridden, swept values first and noise
  (pretrained flags, paths, Hydra and tracking keys) left out, e.g.
  ``tau2=0.1 · dino_vits16 · n_scenes=16``; ``tracking.run_name`` wins;
* **tags** naming the components (``dataset``, ``backbone``, ``cutter``,
  ``descriptor``, ``index``), the study (``study``: the ``experiment=`` overlay),
  the git commit (``mlflow.source.git.commit``, set even where MLflow cannot infer
  it, e.g. from a notebook; ``claid.git_dirty`` says whether the tree had
  uncommitted changes), the swept keys (``claid.swept``) and each swept value
  (``sweep.<key>``), and on failure the error (``claid.error`` + ``error.txt``);
* **parameters**: the flattened resolved config minus paths, run directories and
  the tracking settings (they differ between machines, not between methods);
* **metrics** as the run computed them, plus ``key/*`` copies of the few that
  matter in a runs table whatever the protocol (:func:`key_metrics`).

Runs of a multirun are nested under the sweep's parent run (``claid/sweeps.py``).
Experiments created here are tagged ``mlflow.experimentKind=custom_model_development``
so that MLflow 3's UI opens on the runs table, not on the GenAI overview.
"""

from __future__ import annotations

import logging
import os
import subprocess
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# MLflow refuses longer parameter values; longer ones are cut and marked.
_MAX_PARAM_LEN = 6000
# a run name that fits a runs-table column and a chart legend
MAX_NAME_LEN = 48
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}

# config groups and leaf keys that are where things live, not what ran
_NOISE_GROUPS = ("paths", "tracking", "hydra")
_PATH_KEYS = {"root", "root_dir", "data_dir", "cache_dir", "output_dir", "uri", "artifact_location"}
# overrides that do not belong in a run name (they change no result, or only where files go)
_NAME_NOISE_LEAVES = {"pretrained", "text_pretrained", "seed", "checkpoint", "cache_dir"} | _PATH_KEYS
_NAME_NOISE_GROUPS = (*_NOISE_GROUPS, "engine", "cache", "experiment", "local")

# headline metric of each protocol, first match wins (names as scores_to_metrics logs them)
HEADLINE_METRICS = (
    "lab/mAP-all",
    "revisited/medium/mAP",
    "trapezoid/mAP",
    "gldv2/mAP-at-1000",
    "detection/AR-greedy-100",
    "detection/recall-anymatch-mask-iou0.5",
)


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


def run_params(cfg: Mapping[str, Any]) -> dict[str, str]:
    """The parameters logged for a run: the flattened config without paths, run
    directories and tracking settings (``paths.*``, ``tracking.*``, ``*.root``...)."""
    flat = flatten_config(cfg)
    return {
        key: value
        for key, value in flat.items()
        if key.split(".")[0] not in _NOISE_GROUPS and key.split(".")[-1] not in _PATH_KEYS
    }


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
        before = metrics.get(f"rerank/before/{headline}")  # a re-ranked run: claid/rerank/stage.py
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


def _short(override: str) -> str | None:
    """``cutter.tau2=0.1`` -> ``tau2=0.1``; ``backbone=dino_vits16`` -> ``dino_vits16``;
    None for an override that names no method choice (see _NAME_NOISE_*)."""
    key, _, value = override.lstrip("+~").partition("=")
    parts = key.split(".")
    if parts[0] in _NAME_NOISE_GROUPS or parts[-1] in _NAME_NOISE_LEAVES or key.startswith("hydra"):
        return None
    if len(parts) == 1:  # a group choice or a top-level value
        return value if key in ("dataset", "backbone", "cutter", "descriptor", "index") else f"{key}={value}"
    return f"{parts[-1]}={value}"


def run_name(overrides: list[str], swept: list[str] | tuple[str, ...] = (), fallback: str = "defaults") -> str:
    """A run name from a job's overrides: swept keys first, then the rest in the
    order typed, noise dropped, joined with `` · `` and cut to :data:`MAX_NAME_LEN`."""
    swept_set = set(swept)
    first = [o for o in overrides if o.partition("=")[0].lstrip("+~") in swept_set]
    rest = [o for o in overrides if o not in first]
    parts = [p for p in map(_short, first + rest) if p]
    # swept values are kept even when their key looks like noise (e.g. a seed sweep)
    parts = [o.partition("=")[0].split(".")[-1] + "=" + o.partition("=")[2] for o in first if not _short(o)] + parts
    name = " · ".join(dict.fromkeys(parts)) or fallback
    return name if len(name) <= MAX_NAME_LEN else name[: MAX_NAME_LEN - 1] + "…"


def component_tags(cfg: Mapping[str, Any], choices: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Tags naming what ran: ``dataset``, ``backbone``, ``cutter``, ``descriptor``,
    ``index`` (Hydra's group choices when known, else read off the config),
    ``study`` (the ``experiment=`` overlay, "none" without one) and ``rerank``."""
    choices = dict(choices or {})

    def from_cfg(group: str) -> str:
        node = cfg.get(group) or {}
        for key in ("model_name", "cutter", "factory"):
            if node.get(key):
                return str(node[key])
        return str(node.get("_target_", "?")).rsplit(".", 1)[-1].removeprefix("load_")

    tags = {g: str(choices.get(g) or from_cfg(g)) for g in ("dataset", "backbone", "cutter", "descriptor", "index")}
    tags["study"] = str(choices.get("experiment") or "none")
    rerank = cfg.get("rerank") or {}  # the methods in running order (claid/rerank/), "none" without
    tags["rerank"] = "+".join(m for m in ("dba", "aqe", "diffusion") if m in rerank) or "none"
    return tags


def run_identity(cfg: Mapping[str, Any]) -> RunIdentity:
    """Name, tags and parameters of the current job (Hydra's overrides and choices
    when run through ``run.py``, the config alone otherwise), nested under the
    sweep's parent run inside a multirun."""
    from claid.sweeps import job_sweep

    overrides, choices = _hydra_job()
    sweep = job_sweep()
    swept = sweep.swept if sweep else []
    tags = component_tags(cfg, choices)
    fallback = " · ".join(tags[g] for g in ("backbone", "cutter", "descriptor"))
    name = (cfg.get("tracking") or {}).get("run_name") or run_name(overrides, swept, fallback=fallback)
    commit = git_commit()
    tags.update({
        "mlflow.source.git.commit": commit.removesuffix("-dirty"),
        "claid.git_dirty": str(commit.endswith("-dirty")).lower(),
    })
    dataset_root = (cfg.get("dataset") or {}).get("root")
    if dataset_root:
        tags["claid.dataset_root"] = str(dataset_root)
    if swept:
        values = dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
        tags["claid.swept"] = ",".join(swept)
        tags.update({f"sweep.{key}": values.get(key, "?") for key in swept})
    return RunIdentity(
        name=name, tags=tags, params=run_params(cfg), parent_run_id=sweep.parent_run_id if sweep else None
    )


def _hydra_job() -> tuple[list[str], dict]:
    """The job's task overrides and group choices, or ([], {}) outside a Hydra job."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        hydra_cfg = HydraConfig.get()
    except ValueError:
        return [], {}
    return list(hydra_cfg.overrides.task), OmegaConf.to_container(hydra_cfg.runtime.choices)


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
        open_experiment(mlflow, self.experiment, self.artifact_location)
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


def tracker_for(cfg) -> Tracker:
    """The Tracker of the current job: ``cfg.tracking`` plus :func:`run_identity`."""
    from omegaconf import OmegaConf

    settings = OmegaConf.to_container(cfg.tracking, resolve=True)
    settings = {k: v for k, v in settings.items() if not k.startswith("_")}  # _target_: Tracker
    return Tracker(**settings, identity=run_identity(cfg))


def record_failed_job(cfg, err: BaseException) -> str | None:
    """Make sure a job that raised ``err`` has a FAILED MLflow run holding the error:
    the run it opened (already recorded by :meth:`Tracker.run`), or a new one when
    it failed before opening one (a settings error). Returns the run id, None when
    tracking is off."""
    if getattr(err, "mlflow_run_id", None):
        return err.mlflow_run_id  # type: ignore[attr-defined]
    tracker = tracker_for(cfg)
    if not tracker.enabled:
        return None
    try:
        with tracker.run():
            raise err
    except BaseException as again:
        if again is not err:
            raise
    return tracker.run_id


def figure_caption(cfg, dataset: str) -> str:
    """What a picture's title says about its run: the run name and the dataset."""
    return f"{run_identity(cfg).name} · {dataset}"
