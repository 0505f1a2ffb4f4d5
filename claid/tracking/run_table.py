"""Read logged runs back from MLflow as tables: one reader for a whole experiment,
a sweep's parent run, or a list of run ids, used by ``python -m claid runs``, the
sweep summary (:mod:`claid.tracking.sweep_parent`), ``experiments/paper_tables/render.py`` and
``notebooks/compare_runs.ipynb``.

    from claid.tracking.run_table import format_table, runs_table
    rows = runs_table("sqlite:///outputs/mlflow/mlflow.db", "table7_ablation",
                      params=["cutter.init", "cutter.filter_dummies"],
                      metrics=["lab/mAP-50", "lab/mAP-all", "count/regions"])
    print(format_table(rows))
    rows = runs_table(URI, parent="<sweep parent run id>")  # swept keys + key metrics

    python -m claid runs --experiment claid --param backbone.model_name=vit_small_patch16_224.dino
    python -m claid runs --parent <run id>
    python -m claid runs --runs <id> <id> --metric lab/mAP-50
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

KEY_METRICS = ["key/headline", "key/chance", "key/global", "key/regions_per_image"]
# the key/ names as a table header says them
KEY_LABELS = {"key/headline": "headline", "key/chance": "chance", "key/global": "global descr.",
              "key/regions_per_image": "regions/img", "key/before_rerank": "before re-ranking",
              "key/rerank_gain": "re-ranking gain"}
# shown in a sweep summary when some run has them (a rerank=... sweep: claid/rerank/)
RERANK_KEYS = ["key/before_rerank", "key/rerank_gain"]
DEFAULT_URI = "sqlite:///outputs/mlflow/mlflow.db"


def search_runs(
    tracking_uri: str,
    experiment: str | Sequence[str] | None = None,
    *,
    parent: str | None = None,
    run_ids: Sequence[str] | None = None,
    where: str = "",
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
    only_finished: bool = False,
):
    """MLflow runs, newest first, every page of them (``MlflowClient.search_runs``
    returns at most 1,000 per call). Pick the runs by experiment name(s), by sweep
    parent (its children) or by id; narrow them with ``params`` / ``tags`` equalities
    and ``where`` (MLflow filter syntax). ValueError names an unknown experiment or run."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    if run_ids:
        try:
            runs = [client.get_run(run_id) for run_id in run_ids]
        except MlflowException as err:
            raise ValueError(f"run not found at {tracking_uri}: {err.message}") from None
        return [r for r in runs if _matches(r, params, tags, only_finished)]
    clauses = [where] if where else []
    if parent:
        try:
            client.get_run(parent)
        except MlflowException:
            raise ValueError(f"no MLflow run {parent!r} at {tracking_uri}") from None
        # every experiment: a job whose overlay sets another tracking.experiment is still a child
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
        clauses.append(f"tags.`mlflow.parentRunId` = '{parent}'")
    else:
        names = [experiment] if isinstance(experiment, str) else list(experiment or ["claid"])
        experiment_ids = []
        for name in names:
            found = client.get_experiment_by_name(name)
            if found is None:
                known = sorted(e.name for e in client.search_experiments())
                raise ValueError(f"no MLflow experiment {name!r} at {tracking_uri}; known: {known}")
            experiment_ids.append(found.experiment_id)
    clauses += [f"params.`{k}` = '{v}'" for k, v in (params or {}).items()]
    clauses += [f"tags.`{k}` = '{v}'" for k, v in (tags or {}).items()]
    if only_finished:
        clauses.append("attributes.status = 'FINISHED'")
    runs, token = [], None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string=" and ".join(clauses), max_results=1000,
            order_by=["attributes.start_time DESC"], page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _matches(run, params, tags, only_finished) -> bool:
    if only_finished and run.info.status != "FINISHED":
        return False
    return all(run.data.params.get(k) == v for k, v in (params or {}).items()) and all(
        run.data.tags.get(k) == v for k, v in (tags or {}).items()
    )


def swept_keys(runs) -> list[str]:
    """The keys swept in ``runs`` (their ``claid.swept`` tags), first-seen order."""
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(k for k in run.data.tags.get("claid.swept", "").split(",") if k))
    return list(keys)


def varied_keys(runs) -> list[str]:
    """The keys that tell ``runs`` apart: their swept keys when they came from a
    multirun, else the parameters whose values differ between them (sorted)."""
    swept = swept_keys(runs)
    if swept or len(runs) < 2:
        return swept
    names = set().union(*(r.data.params for r in runs))
    return sorted(n for n in names if len({r.data.params.get(n) for r in runs}) > 1)


def swept_value(run, key: str) -> str | None:
    """A run's value of ``key``: its ``sweep.<key>`` tag (group choices too), else the param."""
    return run.data.tags.get(f"sweep.{key}", run.data.params.get(key))


def runs_table(
    tracking_uri: str,
    experiment: str | Sequence[str] | None = None,
    params: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    only_finished: bool = True,
    *,
    parent: str | None = None,
    run_ids: Sequence[str] | None = None,
    where: str = "",
    param_equals: dict[str, str] | None = None,
    tag_equals: dict[str, str] | None = None,
) -> list[dict]:
    """One dict per run (see :func:`search_runs` for which), newest first: ``run_id``,
    ``run_name``, ``status``, the chosen params (default: :func:`varied_keys`), the chosen
    metrics (default: :data:`KEY_METRICS`; None where a run lacks one) and, when a
    run failed, ``error``."""
    runs = search_runs(
        tracking_uri, experiment, parent=parent, run_ids=run_ids, where=where,
        params=param_equals, tags=tag_equals, only_finished=only_finished,
    )
    params = list(varied_keys([r for r in runs if r.data.tags.get("claid.role") != "sweep"])
                  if params is None else params)
    metrics = list(KEY_METRICS if metrics is None else metrics)
    rows = []
    for run in runs:
        row = {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status}
        row.update({p: swept_value(run, p) for p in params})
        row.update({m: run.data.metrics.get(m.replace("@", "_at_")) for m in metrics})
        if "claid.error" in run.data.tags:
            row["error"] = run.data.tags["claid.error"]
        rows.append(row)
    return rows


def sort_by_values(rows: list[dict], keys: Sequence[str]) -> list[dict]:
    """``rows`` ordered by the values of ``keys`` (numerically where they are numbers)."""

    def order(value):
        try:
            return (0, float(value), "")
        except (TypeError, ValueError):
            return (1, 0.0, str(value))

    return sorted(rows, key=lambda row: [order(row.get(k)) for k in keys])


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None, digits: int = 3) -> str:
    """Plain-text table of ``rows`` (floats rounded to ``digits``)."""
    if not rows:
        return "(no runs)"
    if columns is None:
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(c for c in row if c != "run_id"))
        columns = list(seen)
    columns = list(columns)

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return "-" if value is None else str(value)

    header = [KEY_LABELS.get(c, c) for c in columns]
    body = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in body]
    return "\n".join(lines)


def _pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: {flag} takes KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def main(argv: Sequence[str]) -> None:
    """``python -m claid runs``: print the runs table of an experiment, a sweep
    parent or run ids (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="claid runs", description="Table of logged runs.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--experiment", action="append", help="MLflow experiment name (repeatable; default claid)")
    source.add_argument("--parent", help="a sweep's parent run id: its jobs")
    source.add_argument("--runs", nargs="+", metavar="RUN_ID", help="these runs")
    parser.add_argument("--uri", default=DEFAULT_URI, help=f"tracking URI (default {DEFAULT_URI})")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="keep runs with this param")
    parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="keep runs with this tag")
    parser.add_argument("--where", default="", help="an MLflow filter string, e.g. \"metrics.`key/headline` > 0.2\"")
    parser.add_argument("--column", action="append", metavar="PARAM", help="param columns (default: swept keys)")
    parser.add_argument("--metric", action="append", help="metric columns (default: the key/ metrics)")
    parser.add_argument("--finished", action="store_true", help="only runs that finished")
    parser.add_argument("--csv", help="also write the table to this CSV file")
    args = parser.parse_args(list(argv))
    try:
        rows = runs_table(
            args.uri, args.experiment, params=args.column, metrics=args.metric, only_finished=args.finished,
            parent=args.parent, run_ids=args.runs, where=args.where,
            param_equals=_pairs(args.param, "--param"), tag_equals=_pairs(args.tag, "--tag"),
        )
    except ValueError as err:
        sys.exit(f"error: {err}")
    keys = args.column or [k for k in (rows[0] if rows else {}) if k not in ("run_id", "run_name", "status", "error")
                           and k not in (args.metric or KEY_METRICS)]
    print(format_table(sort_by_values(rows, keys) if args.parent else rows))
    if args.csv:
        from claid.tracking.tables import write_csv

        write_csv(rows, args.csv)
