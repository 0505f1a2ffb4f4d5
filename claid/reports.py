"""Read logged runs back from MLflow as tables, for experiment scripts and notebooks.

    from claid.reports import runs_table
    rows = runs_table("sqlite:///outputs/mlflow/mlflow.db", "table7_ablation",
                      params=["cutter.init", "cutter.filter_dummies"],
                      metrics=["lab/mAP-50", "lab/mAP-all", "count/regions"])
    print(format_table(rows))
"""

from __future__ import annotations

from collections.abc import Sequence


def runs_table(
    tracking_uri: str,
    experiment: str,
    params: Sequence[str],
    metrics: Sequence[str],
    only_finished: bool = True,
) -> list[dict]:
    """One dict per logged run of ``experiment``: the chosen params and metrics (None
    where a run lacks one), newest run first, plus ``run_id`` and ``run_name``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        known = sorted(e.name for e in client.search_experiments())
        raise ValueError(f"no MLflow experiment {experiment!r} at {tracking_uri}; known: {known}")
    query = "attributes.status = 'FINISHED'" if only_finished else ""
    runs = client.search_runs([exp.experiment_id], filter_string=query, order_by=["attributes.start_time DESC"])
    rows = []
    for run in runs:
        row = {"run_id": run.info.run_id, "run_name": run.info.run_name}
        row.update({p: run.data.params.get(p) for p in params})
        row.update({m: run.data.metrics.get(m.replace("@", "_at_")) for m in metrics})
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None, digits: int = 3) -> str:
    """Plain-text table of ``rows`` (floats rounded to ``digits``)."""
    if not rows:
        return "(no runs)"
    columns = list(columns or [c for c in rows[0] if c != "run_id"])

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return "-" if value is None else str(value)

    body = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in body]
    return "\n".join(lines)
