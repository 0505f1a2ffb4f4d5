"""Render tables (and a plot) from logged MLflow runs: a paper study, any other
experiment, or one sweep (its parent run), through the same reader as
``python -m claid runs`` (``claid.tracking.run_table``).

    .venv/bin/python experiments/paper_tables/render.py table7_ablation
    .venv/bin/python experiments/paper_tables/render.py all --uri sqlite:///outputs/mlflow/mlflow.db
    .venv/bin/python experiments/paper_tables/render.py claid                 # any experiment
    .venv/bin/python experiments/paper_tables/render.py --parent <run id> --plot tau2.png  # one sweep
"""

from __future__ import annotations

import argparse

from claid.tracking.run_table import format_table, runs_table, sort_by_values

LAB = ["lab/mAP-50", "lab/mAP-100", "lab/mAP-all"]
# study (= MLflow experiment name set by conf/experiment/<study>.yaml) -> (params, metrics)
STUDIES = {
    "table1_cutters": (["cutter.cutter", "dataset._target_"], LAB + ["loc/mIoU-standard"]),
    "table1_descriptors": (["descriptor.model_name"], LAB),
    "table3_multi_instance": (["dataset.subset"], LAB),
    "table6_image_retrieval": (["dataset._target_"], ["trapezoid/mAP", "lab/mAP-all"]),
    "table7_ablation": (["cutter.init", "cutter.filter_dummies"], LAB + ["count/regions"]),
    "table8_fixed_depth": (["cutter.max_depth"], ["count/regions"] + LAB),
    "table9_backbones": (["backbone.model_name"], LAB),
    "table10_ilias": (["dataset.queries"], ["gldv2/mAP-at-50", "gldv2/mAP-at-100", "gldv2/mAP-at-1000"]),
    "fig8_tau1": (["cutter.tau1"], LAB),
    "fig8_tau2": (["cutter.tau2"], LAB),
}
# any other experiment or sweep: its swept keys (tags) and the key/ metrics
BASELINES = ["key/chance", "key/global"]


def render(uri: str, experiment: str | None = None, parent: str | None = None, finished: bool = True) -> list[dict]:
    """Print the table of a study / experiment / sweep parent; returns its rows
    (sorted by the swept values)."""
    params, metrics = STUDIES.get(experiment or "", (None, None))
    rows = runs_table(uri, experiment, params=params, metrics=metrics, only_finished=finished, parent=parent)
    keys = params or [k for k in (rows[0] if rows else {}) if "." in k and k not in (metrics or []) and "/" not in k]
    rows = sort_by_values(rows, keys)
    columns = [*keys, *(metrics or ["key/headline", "key/chance", "key/global", "key/regions_per_image"])]
    print(format_table(rows, ["run_name", *columns]))
    return rows


def plot(rows: list[dict], path: str, title: str) -> None:
    """The first swept key against the headline metric, baselines dashed (one-key sweeps)."""
    from claid.figures import draw_sweep_metrics, save_figure

    key = next((k for k in rows[0] if "." in k and "/" not in k), None) if rows else None
    if key is None:
        raise SystemExit("error: no swept key in these runs to plot against")
    rows = [r for r in rows if r.get("key/headline") is not None]
    figure = draw_sweep_metrics(
        [r[key] for r in rows], {"headline": [r["key/headline"] for r in rows]},
        baselines={name: [r.get(name) for r in rows] for name in BASELINES}, xlabel=key, title=title,
    )
    print(f"plot: {save_figure(figure, path)}")


def _title(uri: str, study: str | None, parent: str | None, rows: list[dict]) -> str:
    """The plot's title: the study or sweep name and the dataset of its runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    name = client.get_run(parent).info.run_name if parent else study
    datasets = sorted({client.get_run(r["run_id"]).data.tags.get("dataset", "?") for r in rows[:20]})
    return f"{name} ({', '.join(datasets)}, {len(rows)} runs)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study", nargs="?", help=f"a study ({', '.join(STUDIES)}), 'all', or any experiment")
    parser.add_argument("--parent", help="a sweep's parent run id (instead of a study)")
    parser.add_argument("--uri", default="sqlite:///outputs/mlflow/mlflow.db")
    parser.add_argument("--all-runs", action="store_true", help="failed runs too")
    parser.add_argument("--plot", help="also plot the headline against the swept key into this PNG")
    args = parser.parse_args()
    if not args.study and not args.parent:
        parser.error("give a study / experiment name or --parent RUN_ID")
    targets = list(STUDIES) if args.study == "all" else [args.study]
    for study in targets if not args.parent else [None]:
        print(f"\n== {study or 'sweep ' + args.parent}")
        try:
            rows = render(args.uri, study, parent=args.parent, finished=not args.all_runs)
        except ValueError as err:
            print(f"(not run yet: {err})")
            continue
        if args.plot:
            plot(rows, args.plot, title=_title(args.uri, study, args.parent, rows))


if __name__ == "__main__":
    main()
