"""A run's per-query records (``queries.json`` in the run dir): every query's own
figures under the benchmark's protocol and the mark of every saved result.

The figures are the protocol's own per-query values (:func:`evaluate` with
``per_query=True``), computed on the full ranking, so a reader never recomputes AP
from the truncated list it is shown; their mean over the scored queries is the run's
metric. The marks come from the same rules (:mod:`claid.evaluation.ground_truth`).

Format (``schema_version`` = ``SCHEMA_VERSIONS["run_queries"]``), one JSON object:

``dataset``, ``family``
    the benchmark and its protocol family ("lab", "trapezoid", "revisited", "gldv2").
``metrics``
    the per-query value keys, as the run's metrics name them without the family
    prefix: lab ``mAP-50``, ``mAP-100``, ``mAP-all``; revisited ``<grading>/mAP``,
    ``<grading>/mP-<k>``; trapezoid ``mAP``; gldv2 ``mAP-at-<k>``.
``headline``
    the protocol's headline key among ``metrics`` (``claid.tracking.HEADLINE_METRICS``).
``definitions``
    metric key -> its definition, as the run's scores record it.
``means``
    metric key -> mean over the queries scored for it (= ``metrics.json``'s
    ``<family>/<key>``); absent keys had no query to score.
``gradings``
    the ground-truth settings results are marked under: ["easy", "medium", "hard"]
    for revisited, else ["default"]; a metric key ``<grading>/...`` reads the marks of
    its grading, any other key those of "default".
``top``
    how many results per query are saved (``search.save_top``).
``queries``
    one object per query searched, in the benchmark's order:
    ``qid``; ``image`` (id, or null for text), ``box`` ([x1, y1, x2, y2] original
    pixels, exclusive end, or null), ``text``;
    ``values``: metric key -> fraction in [0, 1], or null when the query has no
    positive under that key's grading (left out of that mean);
    ``n_relevant``: grading -> |R|, the divisor of the AP formulas;
    ``n_ranked``: images in the full ranking;
    ``results``: the first ``top`` images in the order the protocol scored them
    (equal scores in its ``ties`` order), each ``image``, ``score``, ``box`` and
    ``marks``: grading -> one of :data:`MARKS`.
"""

from __future__ import annotations

from typing import Any

from claid.artifacts import schema_version
from claid.evaluation.ap import metric_function
from claid.evaluation.conventions import tie_ordered
from claid.evaluation.ground_truth import ground_truths, reachable_positives, removed_images
from claid.evaluation.protocols import evaluate, queries_with_positives, resolve_protocol
from claid.evaluation.revisited_settings import REVISITED_SETTINGS
from claid.structures import Benchmark, Ranking

__all__ = ["MARKS", "SCHEMA_VERSION", "headline_key", "metric_keys", "query_records", "result_marks"]

SCHEMA_VERSION = schema_version("run_queries")

#: What a saved result is to its query under one grading.
MARKS: dict[str, str] = {
    "positive": "relevant: counts as a hit",
    "junk": "the ground truth's junk: left out of the ranking before scoring (ranks close up)",
    "negative": "counted as not relevant",
    "removed": "a query image the protocol removes from the database: not scored",
}
DEFAULT_GRADING = "default"


def gradings(family: str) -> list[str]:
    """The ground-truth settings a family marks results under."""
    return list(REVISITED_SETTINGS) if family == "revisited" else [DEFAULT_GRADING]


def metric_keys(spec) -> list[str]:
    """The value keys :func:`evaluate` gives for a resolved protocol, in its order."""
    if spec.family == "revisited":
        return [f"{s}/{m}" for s in REVISITED_SETTINGS for m in spec.metrics]
    return list(spec.metrics)


def grading_of(key: str) -> str:
    """The grading whose marks explain the value ``key``."""
    return key.split("/", 1)[0] if "/" in key else DEFAULT_GRADING


def headline_key(family: str, keys: list[str]) -> str:
    """The protocol's headline among ``keys`` (the first of ``HEADLINE_METRICS`` of the
    family present), else the first key."""
    from claid.tracking.mlflow_run import HEADLINE_METRICS

    prefix = f"{family}/"
    named = [h[len(prefix):] for h in HEADLINE_METRICS if h.startswith(prefix)]
    return next((k for k in named if k in keys), keys[0])


def result_marks(query, images: list[str], spec, query_images: set[str],
                 database: set[str]) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Mark every image of one ranking under each grading of the protocol.

    Args:
        query: the ``Query``; images: the ranked image ids, best first.
        spec: the resolved protocol; query_images: every query image of the benchmark;
        database: the benchmark's database ids (empty: no database list).
    Returns:
        (grading -> one mark of :data:`MARKS` per image, grading -> |R|).
    """
    removed = removed_images(query, spec, query_images)
    marks, n_relevant = {}, {}
    for setting, (positives, junk) in ground_truths(query, spec).items():
        reachable, n_relevant[setting or DEFAULT_GRADING] = reachable_positives(positives, removed, database, spec)
        junk = junk if spec.junk else set()  # junk: false keeps junk as non-relevant
        marks[setting or DEFAULT_GRADING] = [
            "removed" if image in removed else "positive" if image in reachable
            else "junk" if image in junk else "negative"
            for image in images
        ]
    return marks, n_relevant


def query_records(bench: Benchmark, rankings: list[Ranking], top: int) -> dict[str, Any]:
    """The per-query records of a run (the module docstring's format).

    Args:
        bench: the benchmark with exactly the queries searched (``rankings`` order
            or any order: rankings are matched by ``qid``).
        rankings: the full ranking of every query.
        top: results saved per query (``search.save_top``).
    """
    spec = resolve_protocol(bench.protocol)
    keys = metric_keys(spec)
    per_query: dict[str, dict[str, float]] = {}
    means: dict[str, float] = {}
    if queries_with_positives(bench):  # evaluate refuses a benchmark with nothing to score
        scores = evaluate(rankings, bench, per_query=True)[0]
        per_query, means = scores.settings["per_query"], dict(scores.values)
    by_qid = {r.qid: r for r in rankings}
    query_images = {q.image for q in bench.queries if q.image is not None}
    database = set(bench.database)
    database_index = {image: i for i, image in enumerate(bench.database)} if spec.ties != "as_ranked" else {}
    out = []
    for query in bench.queries:
        ranking = tie_ordered(by_qid[query.qid], spec.ties, database_index)
        saved = list(ranking.images[:top])
        marks, n_relevant = result_marks(query, saved, spec, query_images, database)
        values = per_query.get(query.qid, {})
        out.append({
            "qid": query.qid,
            "image": query.image,
            "box": None if query.box is None else [float(v) for v in query.box],
            "text": query.text,
            "values": {key: values.get(key) for key in keys},
            "n_relevant": n_relevant,
            "n_ranked": len(ranking.images),
            "results": [
                {"image": image, "score": float(score), "box": [round(float(v), 1) for v in box],
                 "marks": {g: marks[g][i] for g in marks}}
                for i, (image, score, box) in enumerate(zip(saved, ranking.scores[:top], ranking.boxes[:top]))
            ],
        })
    return {
        "schema_version": SCHEMA_VERSION,
        "dataset": bench.name,
        "family": spec.family,
        "metrics": keys,
        "headline": headline_key(spec.family, keys),
        "definitions": {key: metric_function(key.split("/")[-1])[1] for key in keys},
        "means": means,
        "gradings": gradings(spec.family),
        "marks": MARKS,
        "top": int(top),
        "queries": out,
    }
