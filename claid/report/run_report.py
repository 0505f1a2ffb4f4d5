"""A run's files: ``metrics.json`` (the report), ``rankings.json`` (the saved rankings)
and ``queries.json`` (per-query figures and marks), assembled here and only here from
what the stages returned.

The shape of ``metrics.json`` (schema ``report`` version :data:`SCHEMA_VERSION`) is
:class:`RunReport`: every key, when it is present, and what it holds. Readers
(``claid serve``, notebooks, ``experiments/``) rely on it; a change of meaning bumps the
version (:mod:`claid.artifacts`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from claid.artifacts import atomic_write_json, schema_version
from claid.structures import Ranking

SCHEMA_VERSION = schema_version("report")


@dataclass(frozen=True)
class ReportSettings:
    """What the report reads of the config.

    Attributes:
        save_top: ``search.save_top``, images per query in ``rankings.json`` / ``queries.json``.
        whole_image_region: ``search.whole_image_region``.
        k: ``index.k``.
        backbone, descriptor: their nodes (the weight files they name are recorded).
        targets: group -> its ``_target_`` (what ran: an example's own class is named).
    """

    save_top: int = 100
    whole_image_region: bool = False
    k: int | None = None
    backbone: dict = field(default_factory=dict)
    descriptor: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)


@dataclass
class RunOutcome:
    """What the stages of one run returned, collected by the pipeline.

    Attributes:
        bench: the benchmark (name, protocol, root, queries).
        store: the region store (counts, skipped images, where it is).
        source_counts: what the region source adds to the counts (``regions_from_file``).
        weights: weight-file parameters (:func:`claid.models.weight_files.weight_params`).
        index_dir: the index dir, when one was built.
        selection: the searched queries (:class:`claid.descriptors.queries.QuerySelection`).
        queries: the benchmark restricted to the searched queries.
        rankings: their rankings (re-ranked when a re-ranker ran).
        scores: retrieval ``Scores`` (empty when no query has a positive).
        queries_without_positives: searched queries that score nothing (None: no search).
        rerank: :class:`claid.rerank.rerank_stage.RerankOutcome` (None: not searched).
        baselines: :class:`claid.evaluation.baselines.BaselineOutcome` (None: not scored).
        detection: :class:`claid.evaluation.detection_stage.DetectionOutcome` (None: no ground truth boxes).
        timing: ``time/<stage>_s`` seconds.
    """

    bench: Any
    store: Any
    source_counts: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    index_dir: Path | None = None
    selection: Any = None
    queries: Any = None
    rankings: list = field(default_factory=list)
    scores: list = field(default_factory=list)
    queries_without_positives: int | None = None
    rerank: Any = None
    baselines: Any = None
    detection: Any = None
    timing: dict = field(default_factory=dict)


@dataclass
class RunReport:
    """The shape of ``metrics.json``. Keys marked optional are left out when absent.

    Attributes:
        schema_version: :data:`SCHEMA_VERSION`.
        dataset: the benchmark's name.
        protocol: how it is evaluated (family, AP variant, ties, junk...).
        settings: what ran: ``whole_image_region``, ``query`` (crop | pool | full),
            ``k_regions``, ``store`` (the region store dir), ``image_root`` (what
            image ids are relative to), ``components`` (group -> ``_target_``),
            ``weights`` (weight files and hashes); optional: ``index`` (the index
            dir), ``text_queries`` / ``text_queries_skipped``, ``global_baseline``
            (how it was searched or why skipped), ``shuffle_repeats``, ``rerank``
            (methods, settings, cached artifacts).
        counts: ``images``, ``skipped``, ``regions``, ``regions_per_image``,
            ``queries``; optional ``queries_without_positives``, ``regions_from_file``.
        skipped: ``[image id, reason]`` of every image that could not be read.
        metrics: the flat metrics, as logged to MLflow (``count/*``, protocol
            metrics, ``baseline/*``, ``rerank/*``, ``detection/*``, ``time/*``).
        timing: ``time/<stage>_s``.
        scores: optional, each protocol's scores ``{"protocol", "values", "settings"}``.
        baselines: optional, ``{"shuffled": metrics, "global_descriptor": metrics}``.
        recall_vs_iou: optional, ``{"rule", "iou", "recall"}`` of the detector.
    """

    schema_version: int
    dataset: str
    protocol: dict
    settings: dict
    counts: dict
    skipped: list
    metrics: dict
    timing: dict
    scores: list | None = None
    baselines: dict | None = None
    recall_vs_iou: dict | None = None

    def as_dict(self) -> dict:
        """The JSON object of ``metrics.json`` (optional keys left out when None)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if v is not None or k not in ("scores", "baselines", "recall_vs_iou")}


def run_report(settings: ReportSettings, outcome: RunOutcome) -> RunReport:
    """The report of one run from what its stages returned."""
    from claid.evaluation import scores_to_metrics
    from claid.evaluation.detection_stage import scores_dict

    bench, store = outcome.bench, outcome.store
    per_image = float(store.num_regions) / max(1, len(store.image_ids))
    run_settings: dict[str, Any] = {
        "whole_image_region": bool(settings.whole_image_region),
        "query": bench.protocol.get("query", "crop"),
        "k_regions": settings.k,
        "store": str(store.store_dir),
        "image_root": str(bench.root),  # what the image ids are relative to (claid serve)
        "components": dict(settings.targets),
        "weights": dict(outcome.weights),
    }
    counts = {"images": len(store.image_ids), "skipped": len(store.skipped),
              "regions": int(store.num_regions), "regions_per_image": per_image,
              "queries": len(bench.queries), **outcome.source_counts}
    metrics: dict[str, float] = {"count/regions": float(store.num_regions),
                                 "count/regions_per_image": per_image,
                                 "count/images": float(len(store.image_ids))}
    selection = outcome.selection
    if selection is not None:
        if selection.text_skipped:
            run_settings["text_queries_skipped"] = selection.text_skipped
        run_settings["text_queries"] = selection.text_queries
    if outcome.index_dir is not None:
        run_settings["index"] = str(outcome.index_dir)
    if outcome.rerank is not None and outcome.rerank.notes:
        run_settings["rerank"] = outcome.rerank.notes
        metrics.update(outcome.rerank.metrics)
    if outcome.queries_without_positives is not None:
        counts["queries_without_positives"] = outcome.queries_without_positives
    scores = None
    if outcome.scores:
        metrics.update(scores_to_metrics(outcome.scores))
        scores = [scores_dict(s) for s in outcome.scores]
    baselines = None
    if outcome.baselines is not None:
        run_settings["global_baseline"] = outcome.baselines.notes
        run_settings["shuffle_repeats"] = outcome.baselines.shuffle_repeats
        baselines = outcome.baselines.scores
        for name, values in baselines.items():
            metrics.update({f"baseline/{name}/{key}": v for key, v in values.items()})
    recall = None
    if outcome.detection is not None:
        metrics.update(outcome.detection.metrics)
        scores = (scores or []) + outcome.detection.scores
        recall = outcome.detection.recall_vs_iou
    metrics.update(outcome.timing)
    return RunReport(schema_version=SCHEMA_VERSION, dataset=bench.name, protocol=bench.protocol,
                     settings=run_settings, counts=counts, skipped=[list(item) for item in store.skipped],
                     metrics=metrics, timing=dict(outcome.timing), scores=scores, baselines=baselines,
                     recall_vs_iou=recall)


def write_run_files(run_dir: Path, settings: ReportSettings, outcome: RunOutcome,
                    report: RunReport) -> dict[str, str]:
    """Write ``metrics.json`` and, when queries were searched, ``rankings.json`` and
    ``queries.json`` into ``run_dir`` (atomically); for ILIAS also ``ilias_knn.json``,
    the rankings in the official kNN format. Returns {artifact name: path}."""
    from claid.evaluation.query_records import query_records  # per-query figures + marks

    artifacts = {"metrics": str(atomic_write_json(Path(run_dir) / "metrics.json", report.as_dict()))}
    if outcome.rankings:
        top = int(settings.save_top)
        saved = rankings_report(outcome.selection.queries, outcome.rankings, outcome.bench, top)
        artifacts["rankings"] = str(atomic_write_json(Path(run_dir) / "rankings.json", saved))
        records = query_records(outcome.queries, outcome.rankings, top)
        artifacts["queries"] = str(atomic_write_json(Path(run_dir) / "queries.json", records))
        if outcome.bench.name == "ilias":  # what the official evaluation script reads
            from claid.datasets.ilias import official_image_id
            from claid.evaluation.official_knn import write_official_knn

            depth = max(outcome.bench.protocol.get("k") or [1000])
            artifacts["official_knn"] = str(write_official_knn(
                Path(run_dir) / "ilias_knn.json", outcome.rankings, outcome.queries, top_k=depth,
                image_id=official_image_id))
    return artifacts


def rankings_report(queries: list, rankings: list[Ranking], bench, top: int) -> dict:
    """Every query's ranked images as data (``rankings.json`` in the run dir): the
    query (image and box, or text), then the first ``top`` images with score, the
    localising box (original pixels) and whether the ground truth counts it relevant."""
    out = []
    for query, ranking in zip(queries, rankings):
        positives = set(query.positives)
        out.append({
            "qid": query.qid,
            "image": query.image,
            "box": None if query.box is None else [float(v) for v in query.box],
            "text": query.text,
            "results": [
                {"image": image, "score": round(float(score), 6),
                 "box": [round(float(v), 1) for v in box], "relevant": image in positives}
                for image, score, box in zip(ranking.images[:top], ranking.scores[:top], ranking.boxes[:top])
            ],
        })
    return {"schema_version": SCHEMA_VERSION, "dataset": bench.name, "top": top, "queries": out}
