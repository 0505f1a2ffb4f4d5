"""Render the paper's tables from logged MLflow runs.

    .venv/bin/python experiments/paper_tables/render.py table7_ablation
    .venv/bin/python experiments/paper_tables/render.py all --uri sqlite:///outputs/mlflow/mlflow.db
"""

from __future__ import annotations

import argparse

from claid.reports import format_table, runs_table

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("study", choices=[*STUDIES, "all"])
    parser.add_argument("--uri", default="sqlite:///outputs/mlflow/mlflow.db")
    args = parser.parse_args()
    for study in STUDIES if args.study == "all" else [args.study]:
        params, metrics = STUDIES[study]
        print(f"\n== {study}")
        try:
            rows = runs_table(args.uri, study, params=params, metrics=metrics)
        except ValueError as err:
            print(f"(not run yet: {err})")
            continue
        print(format_table(rows, [*params, *metrics]))


if __name__ == "__main__":
    main()
