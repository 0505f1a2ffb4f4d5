"""The ILIAS kNN file: a run's rankings in the official format, and such a file read back.

The official ILIAS tools (ilias-vrg/ilias ``knn_search/search.py`` writes,
``evaluation/evaluate.py`` scores) exchange one JSON object::

    {"<query id>": {"<database id>": <similarity>, ...}, ...}

with the official ids: ``<instance>/query/Q000_00.jpg`` (image query),
``<instance>/query/T000.txt`` (text query), ``<instance>/pos/P000_00.jpg``
(positive), ``<shard file name>/<member key>`` (YFCC100M distractor). The official
evaluation sorts each query's entries by similarity, keeps the first k and scores
them with scikit-learn's ``average_precision_score`` times hits / min(k, |GT|):
claid's ``mAP-at-<k>`` with ``ties: pooled``. Written with ``top_k`` equal to the
evaluated k, the official script and claid score the same list, ties included
(a run of equal scores cut by rank k is the one case where the official figure
depends on numpy's unstable sort order).

The official per-query rules, which :func:`read_official_knn` applies: a query
absent from the file is left out of the mean (not refused); keys of the file that
are no query of the benchmark are ignored; a database id the benchmark does not
hold counts as non-relevant, or is refused with ``check_ids=True`` (the official
``--check_ids``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from claid.artifacts import atomic_write_bytes
from claid.structures import Benchmark, Query, Ranking

__all__ = ["official_query_id", "official_knn", "write_official_knn", "read_official_knn"]

_MAX_LISTED = 50


def _same(image_id: str) -> str:
    return image_id


def official_query_id(query: Query) -> str:
    """The official id of a query: ``query.extra["official_id"]`` when the loader
    recorded one, else ``query.qid``."""
    return str(query.extra.get("official_id", query.qid))


def official_knn(
    rankings: Sequence[Ranking],
    benchmark: Benchmark,
    *,
    top_k: int = 1000,
    image_id: Callable[[str], str] | None = None,
) -> dict[str, dict[str, float]]:
    """The rankings as the official kNN object: {query id: {database id: similarity}}.

    Args:
        rankings: one per query of ``benchmark`` at most, best first.
        benchmark: gives each query's official id (:func:`official_query_id`).
        top_k: entries kept per query (the official evaluation's k).
        image_id: claid image id -> official database id (default: unchanged),
            e.g. ``claid.datasets.ilias.official_image_id``.
    Returns:
        Queries in the benchmark's order, entries best first, similarities as
        Python floats (a float32 score converts exactly, so ties stay ties).
    Raises:
        ValueError: top_k < 1, a ranking of an unknown query, a non-finite score,
            or two images of one ranking with one official id.
    """
    if int(top_k) < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    to_official = image_id or _same
    by_qid = {ranking.qid: ranking for ranking in rankings}
    queries = {query.qid: query for query in benchmark.queries}
    unknown = sorted(set(by_qid) - set(queries))
    if unknown:
        raise ValueError(f"{len(unknown)} ranking(s) for unknown query ids, e.g. {unknown[:3]}")
    out: dict[str, dict[str, float]] = {}
    for query in benchmark.queries:
        ranking = by_qid.get(query.qid)
        if ranking is None:
            continue
        scores = np.asarray(ranking.scores)[: int(top_k)]
        entries: dict[str, float] = {}
        for image, score in zip(ranking.images[: int(top_k)], scores.tolist()):
            if not math.isfinite(score):
                raise ValueError(f"ranking {query.qid!r}: score {score} of {image!r} is not finite")
            official = to_official(image)
            if official in entries:
                raise ValueError(f"ranking {query.qid!r}: two images have the official id {official!r}")
            entries[official] = float(score)
        qid = official_query_id(query)
        if qid in out:
            raise ValueError(f"two queries have the official id {qid!r}")
        out[qid] = entries
    return out


def write_official_knn(
    path: str | os.PathLike,
    rankings: Sequence[Ranking],
    benchmark: Benchmark,
    *,
    top_k: int = 1000,
    image_id: Callable[[str], str] | None = None,
) -> Path:
    """Write :func:`official_knn` as JSON to ``path`` (atomically); returns the path.
    ``python evaluation/evaluate.py --similarity_file <path> --k <top_k>`` scores it."""
    knn = official_knn(rankings, benchmark, top_k=top_k, image_id=image_id)
    # not json_bytes: its sorted keys would lose the best-first order of the entries
    return atomic_write_bytes(path, json.dumps(knn, indent=1).encode("utf-8"))


def _load(source: str | os.PathLike | Mapping) -> Mapping:
    if isinstance(source, Mapping):
        return source
    try:
        with open(source, encoding="utf-8") as f:
            knn = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"{source}: not a readable kNN JSON file ({err})") from None
    if not isinstance(knn, dict):
        raise ValueError(f"{source}: expected {{query id: {{database id: similarity}}}}")
    return knn


def read_official_knn(
    source: str | os.PathLike | Mapping,
    benchmark: Benchmark,
    *,
    image_id: Callable[[str], str] | None = None,
    check_ids: bool = False,
) -> tuple[list[Ranking], Benchmark, dict]:
    """An official kNN file as claid rankings, under the official per-query rules.

    Args:
        source: a JSON file path, or the loaded object.
        benchmark: the benchmark the file was computed on.
        image_id: claid image id -> official id, as given to :func:`official_knn`.
        check_ids: refuse query keys and database ids the benchmark does not know
            (the official ``--check_ids``); default: ignore unknown query keys and
            count unknown database ids as non-relevant images.
    Returns:
        (rankings sorted by descending similarity, ties in the file's order; the
        file has no boxes: zeros), the benchmark restricted to the queries the file
        holds (its database extended by the unknown ids, under their official
        names; no ground-truth boxes, so no localisation is scored), and a record
        of what the rules did.
    Raises:
        ValueError: a malformed file, nothing to score, or with ``check_ids`` an
            unknown id.
    """
    knn = _load(source)
    to_official = image_id or _same
    to_claid = {to_official(image): image for image in benchmark.database}
    by_official = {official_query_id(query): query for query in benchmark.queries}
    extra_queries = sorted(set(knn) - set(by_official))
    if extra_queries and check_ids:
        raise ValueError(f"{len(extra_queries)} unknown query id(s), e.g. {extra_queries[:3]}")
    kept: list[Query] = []
    rankings: list[Ranking] = []
    strangers: dict[str, None] = {}
    for official, query in by_official.items():
        entries = knn.get(official)
        if entries is None:
            continue
        if not isinstance(entries, Mapping):
            raise ValueError(f"query {official!r}: expected {{database id: similarity}}")
        names = [str(name) for name in entries]
        scores = np.asarray([float(v) for v in entries.values()], dtype=np.float64)
        images = []
        for name in names:
            image = to_claid.get(name)
            if image is None:
                if check_ids:
                    raise ValueError(f"query {official!r}: unknown database id {name!r}")
                strangers.setdefault(name)
                image = name
            images.append(image)
        order = np.argsort(-scores, kind="stable")
        rankings.append(
            Ranking(
                qid=query.qid,
                images=[images[i] for i in order],
                scores=scores[order],
                boxes=np.zeros((len(order), 4), dtype=np.float32),
            )
        )
        kept.append(query)
    if not kept:
        raise ValueError("the kNN file holds none of the benchmark's queries")
    clash = sorted(set(strangers) & set(benchmark.database))
    if clash:
        raise ValueError(f"unknown official ids that are also claid image ids, e.g. {clash[:3]}")
    missing = [query.qid for query in benchmark.queries if official_query_id(query) not in knn]
    restricted = dataclasses.replace(
        benchmark, queries=kept, database=list(benchmark.database) + list(strangers), gt_boxes={}
    )
    record = {
        "queries_missing_from_file": {"count": len(missing), "qids": missing[:_MAX_LISTED]},
        "unknown_query_keys_ignored": {"count": len(extra_queries), "ids": extra_queries[:_MAX_LISTED]},
        "unknown_database_ids_non_relevant": {
            "count": len(strangers), "ids": list(strangers)[:_MAX_LISTED],
        },
    }
    return rankings, restricted, record
