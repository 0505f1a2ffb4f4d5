"""How a job shows up in MLflow: its name, tags and parameters.

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
  matter in a runs table whatever the protocol (:func:`claid.tracking.mlflow_run.key_metrics`).

Runs of a multirun are nested under the sweep's parent run (:mod:`claid.tracking.sweep_parent`).
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from claid.rerank.settings import ORDER
from claid.tracking.mlflow_run import RunIdentity, Tracker, flatten_config

log = logging.getLogger(__name__)

# a run name that fits a runs-table column and a chart legend
MAX_NAME_LEN = 48


# config groups and leaf keys that are where things live, not what ran
_NOISE_GROUPS = ("paths", "tracking", "hydra")
_PATH_KEYS = {"root", "root_dir", "data_dir", "cache_dir", "output_dir", "uri", "artifact_location"}


# overrides that do not belong in a run name (they change no result, or only where files go)
_NAME_NOISE_LEAVES = {"pretrained", "text_pretrained", "seed", "checkpoint", "cache_dir"} | _PATH_KEYS
_NAME_NOISE_GROUPS = (*_NOISE_GROUPS, "engine", "cache", "experiment", "local")


@dataclass(frozen=True)
class TrackingSetup:
    """How a job is tracked, as the config side read it
    (:func:`claid.config.run_settings.tracking_setup`).

    Attributes:
        tracker: the ``tracking`` group's settings (the :class:`Tracker` keywords).
        params: the run's MLflow parameters (:func:`run_params` of the resolved config).
        components: group -> what ran (model name, cutter, index factory...), the tags
            used when Hydra's group choices are not known.
        rerank: the re-ranking methods configured.
        dataset_root: ``dataset.root`` (tag ``claid.dataset_root``), if any.
    """

    tracker: dict = field(default_factory=lambda: {"enabled": False})
    params: dict = field(default_factory=dict)
    components: dict = field(default_factory=dict)
    rerank: tuple = ()
    dataset_root: str | None = None


def run_params(resolved: Mapping[str, Any]) -> dict[str, str]:
    """The parameters logged for a run: the flattened resolved config without paths,
    run directories and tracking settings (``paths.*``, ``tracking.*``, ``*.root``...)."""
    flat = flatten_config(resolved)
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


def component_tags(components: Mapping[str, str], choices: Mapping[str, Any] | None = None,
                   rerank: Sequence[str] = ()) -> dict[str, str]:
    """Tags naming what ran: ``dataset``, ``backbone``, ``cutter``, ``descriptor``,
    ``index`` (Hydra's group choices when known, else ``components``: what the config
    names), ``study`` (the ``experiment=`` overlay, "none" without one) and ``rerank``
    (the methods in running order, "none" without)."""
    choices = dict(choices or {})
    groups = ("dataset", "backbone", "cutter", "descriptor", "index")
    tags = {g: str(choices.get(g) or components.get(g, "?")) for g in groups}
    tags["study"] = str(choices.get("experiment") or "none")
    tags["rerank"] = "+".join(m for m in ORDER if m in rerank) or "none"
    return tags


def run_identity(setup: TrackingSetup) -> RunIdentity:
    """Name, tags and parameters of the current job (Hydra's overrides and choices
    when run through ``run.py``, the config alone otherwise), nested under the
    sweep's parent run inside a multirun."""
    from claid.tracking.job_sweep import job_sweep

    overrides, choices = _hydra_job()
    sweep = job_sweep()
    swept = sweep.swept if sweep else []
    tags = component_tags(setup.components, choices, setup.rerank)
    fallback = " · ".join(tags[g] for g in ("backbone", "cutter", "descriptor"))
    name = setup.tracker.get("run_name") or run_name(overrides, swept, fallback=fallback)
    commit = git_commit()
    tags.update({
        "mlflow.source.git.commit": commit.removesuffix("-dirty"),
        "claid.git_dirty": str(commit.endswith("-dirty")).lower(),
    })
    if setup.dataset_root:
        tags["claid.dataset_root"] = str(setup.dataset_root)
    if swept:
        values = dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
        tags["claid.swept"] = ",".join(swept)
        tags.update({f"sweep.{key}": values.get(key, "?") for key in swept})
    return RunIdentity(
        name=name, tags=tags, params=dict(setup.params), parent_run_id=sweep.parent_run_id if sweep else None
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


def tracker_for(setup: TrackingSetup) -> Tracker:
    """The Tracker of the current job: the ``tracking`` settings plus :func:`run_identity`."""
    return Tracker(**setup.tracker, identity=run_identity(setup))


def record_failed_job(setup: TrackingSetup, err: BaseException) -> str | None:
    """Make sure a job that raised ``err`` has a FAILED MLflow run holding the error:
    the run it opened (already recorded by :meth:`Tracker.run`), or a new one when
    it failed before opening one (a settings error). Returns the run id, None when
    tracking is off."""
    if getattr(err, "mlflow_run_id", None):
        return err.mlflow_run_id  # type: ignore[attr-defined]
    tracker = tracker_for(setup)
    if not tracker.enabled:
        return None
    try:
        with tracker.run():
            raise err
    except BaseException as again:
        if again is not err:
            raise
    return tracker.run_id
