"""Sweep parents: one MLflow parent run per multirun, its jobs nested under it, and
a summary on the parent when the multirun ends.

Registered in ``conf/config.yaml`` as a Hydra callback, so it works with any sweeper
and launcher (``python run.py -m cutter.tau2=0.1,0.2,0.3``, ``experiment=fig8_tau2``'s
``hydra.sweeper.params``):

* ``on_multirun_start`` creates the parent run (named after the sweep, tagged with
  the swept keys) and writes ``<sweep dir>/mlflow_sweep.json``; every job reads it
  (:func:`job_sweep`) and opens its run as a child (:mod:`claid.tracking.run_identity`);
* a job that fails records its error on its own run and returns (``run.py``), so
  the other jobs run and the summary sees every job;
* ``on_multirun_end`` reads the children back (:mod:`claid.tracking.run_table`), writes the
  summary (``summary.csv``, ``summary.md``, ``summary.html``: swept values x key
  metrics, the chance level and the global-descriptor baseline as columns; a plot
  of each key metric against a single swept key, a heat map for two; the recall
  curves overlaid) into ``<sweep dir>/summary/``, logs it on the parent under
  ``summary/``, prints the table, and exits with status 1 when a job failed.
"""

from __future__ import annotations

import html
import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from claid.tracking.job_sweep import PARENT_FILE, in_multirun
from claid.tracking.tables import html_table, markdown_table, write_csv, write_text

log = logging.getLogger(__name__)

_RECALL = re.compile(r"detection/recall-anymatch-(box|mask)-iou([0-9.]+)$")


def job_failed(setup, err: BaseException, traceback: bool = True) -> bool:
    """Inside a multirun, record ``err`` on the job's MLflow run (one is opened for
    a job that failed before its run, e.g. on a settings error), log it (with the
    traceback when ``traceback``) and return True: the job then returns, so that
    the other jobs run and the summary lists this one. Outside a multirun: False.

    ``setup`` is the job's :class:`claid.tracking.run_identity.TrackingSetup`."""
    if not in_multirun():
        return False
    from claid.tracking.run_identity import record_failed_job

    record_failed_job(setup, err)
    log.error("job failed: %s", err, exc_info=err if traceback else None)
    return True


def swept_keys(hydra_cfg) -> list[str]:
    """The keys a multirun sweeps: command-line sweep overrides (``k=a,b``,
    ``k=range(...)``...) and the sweeper's ``params`` that hold more than one value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    overrides = list(hydra_cfg.overrides.task)
    overrides += [f"{k}={v}" for k, v in (hydra_cfg.sweeper.get("params") or {}).items()]
    keys: dict[str, None] = {}
    for override in parser.parse_overrides(overrides):
        if override.is_sweep_override():
            keys[override.get_key_element().lstrip("+~")] = None
    return list(keys)


class SweepParent(Callback):
    """Hydra callback: the MLflow parent run of a multirun and its summary."""

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        """Hydra hands the sweep's whole config to this entry point; it reads it only
        through the config side (:func:`claid.config.run_settings.component_names`)."""
        import mlflow
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        from claid.config.run_settings import component_names
        from claid.tracking.mlflow_run import open_experiment, set_tracking_uri
        from claid.tracking.run_identity import component_tags, run_name

        HydraConfig.instance().set_config(config)  # so ${hydra:...} in paths resolves
        tracking = OmegaConf.to_container(config.tracking, resolve=True)
        if not tracking.get("enabled", True):
            return
        swept = swept_keys(config.hydra)
        overrides = list(config.hydra.overrides.task)
        overrides += [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
        choices = OmegaConf.to_container(config.hydra.runtime.choices)
        set_tracking_uri(mlflow, tracking.get("uri"))
        experiment_id = open_experiment(mlflow, tracking["experiment"], tracking.get("artifact_location"))
        tags = component_tags(component_names(config), choices, tuple(config.get("rerank") or ()))
        tags.update({"claid.role": "sweep", "claid.swept": ",".join(swept), "claid.overrides": " ".join(overrides)})
        name = "sweep " + run_name(overrides, swept)
        parent = mlflow.MlflowClient().create_run(experiment_id, run_name=name, tags=tags)
        sweep_dir = Path(config.hydra.sweep.dir)
        write_text(sweep_dir / PARENT_FILE, json.dumps({
            "parent_run_id": parent.info.run_id, "swept": swept, "uri": mlflow.get_tracking_uri(),
            "experiment": tracking["experiment"],
        }))
        log.info("sweep parent run %s (%s) in experiment %s", parent.info.run_id, name, tracking["experiment"])

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        path = Path(config.hydra.sweep.dir) / PARENT_FILE
        if not path.is_file():
            return
        saved = json.loads(path.read_text())
        summary = summarise_sweep(saved["uri"], saved["parent_run_id"], Path(config.hydra.sweep.dir) / "summary")
        print(summary.text)
        if summary.failed:
            sys.exit(f"error: {summary.failed} of {summary.jobs} jobs failed (the summary above lists their errors)")


@dataclass
class SweepSummary:
    """What :func:`summarise_sweep` made: the rows, the printed text and the files."""

    rows: list[dict]
    text: str
    files: list[Path]
    jobs: int
    failed: int


def summarise_sweep(uri: str, parent_run_id: str, out_dir: str | Path) -> SweepSummary:
    """Read the children of ``parent_run_id``, write the summary files into
    ``out_dir``, log them on the parent under ``summary/`` and close the parent
    (FINISHED, or FAILED when no job finished). Returns what it made."""
    from mlflow.tracking import MlflowClient

    from claid.figures import draw_recall, draw_sweep_heatmap, draw_sweep_metrics, save_figure
    from claid.tracking.run_table import (
        KEY_LABELS,
        KEY_METRICS,
        RERANK_KEYS,
        format_table,
        search_runs,
        sort_by_values,
        swept_value,
    )

    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(parent_run_id)
    swept = [k for k in parent.data.tags.get("claid.swept", "").split(",") if k]
    runs = search_runs(uri, parent=parent_run_id)
    headline = next((r.data.tags["claid.headline"] for r in runs if "claid.headline" in r.data.tags), "headline")
    labels = {**KEY_LABELS, "key/headline": headline}
    shown = KEY_METRICS + [m for m in RERANK_KEYS if any(m in r.data.metrics for r in runs)]
    rows = []
    for run in runs:
        row = {key: swept_value(run, key) for key in swept}
        row.update({"run": run.info.run_name, "status": run.info.status})
        row.update({labels[m]: run.data.metrics.get(m) for m in shown})
        row["error"] = run.data.tags.get("claid.error", "")
        row["run_id"] = run.info.run_id
        rows.append(row)
    rows = sort_by_values(rows, swept)
    out_dir = Path(out_dir)
    columns = [*swept, "run", "status", *(labels[m] for m in shown), "error"]
    title = f"{parent.info.run_name} ({parent.data.tags.get('dataset', '?')}, {len(rows)} jobs)"
    files = [write_csv(rows, out_dir / "summary.csv", [*columns, "run_id"])]
    table = format_table(rows, [c for c in columns if c != "run"])
    files.append(write_text(out_dir / "summary.md", f"# {title}\n\n{markdown_table(rows, columns)}\n"))
    figures = []
    finished = [r for r in rows if r["status"] == "FINISHED" and r[headline] is not None]
    if len(swept) == 1 and finished:
        figures.append(("summary_vs_" + _slug(swept[0]) + ".png", draw_sweep_metrics(
            [r[swept[0]] for r in finished], {headline: [r[headline] for r in finished],
                                              "regions/img": [r["regions/img"] for r in finished]},
            baselines={"chance": [r["chance"] for r in finished], "global descr.": [r["global descr."] for r in finished]},
            xlabel=swept[0], title=title)))
    elif len(swept) == 2 and finished:
        figures.append(("summary_heatmap.png", draw_sweep_heatmap(
            [(r[swept[0]], r[swept[1]], r[headline]) for r in finished], swept, headline, title)))
    curves = {}
    for run in sorted(runs, key=lambda r: [str(swept_value(r, k)) for k in swept]):
        curve = _recall_curve(run.data.metrics)
        if curve:
            curves[" ".join(f"{k.split('.')[-1]}={swept_value(run, k)}" for k in swept) or run.info.run_name] = curve
    if curves:
        figures.append(("summary_recall_vs_iou.png", draw_recall(curves, title=f"recall vs IoU: {title}")))
    for name, figure in figures:
        files.append(save_figure(figure, out_dir / name))
    # pictures inline, so that the page shows them in MLflow's artifact viewer too
    images = "".join(f'<h2>{html.escape(n)}</h2><img src="data:image/png;base64,{_base64(out_dir / n)}">'
                     for n, _ in figures)
    files.append(write_text(out_dir / "summary.html", (
        f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1>{html_table(rows, columns)}{images}</body></html>")))
    for path in files:
        client.log_artifact(parent_run_id, str(path), artifact_path="summary")
    failed = sum(r["status"] != "FINISHED" for r in rows)
    if finished:  # the best job's headline on the parent, for the runs table
        client.log_metric(parent_run_id, "key/headline", max(r[headline] for r in finished))
    client.set_tag(parent_run_id, "claid.jobs", f"{len(rows) - failed} finished, {failed} failed")
    client.set_terminated(parent_run_id, status="FINISHED" if finished else "FAILED")
    text = f"\nsweep summary: {title}\n{table}\nsummary files: {out_dir} (and MLflow run {parent_run_id}, summary/)"
    return SweepSummary(rows=rows, text=text, files=files, jobs=len(rows), failed=failed)


def _base64(path: Path) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode("ascii")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _recall_curve(metrics: dict[str, float]) -> tuple[list[float], list[float]] | None:
    """A run's recall-vs-IoU curve from its logged metrics (mask curve over box)."""
    found: dict[str, dict[float, float]] = {}
    for name, value in metrics.items():
        match = _RECALL.match(name)
        if match:
            found.setdefault(match.group(1), {})[float(match.group(2))] = value
    points = found.get("mask") or found.get("box")
    if not points:
        return None
    thresholds = sorted(points)
    return thresholds, [points[t] for t in thresholds]


