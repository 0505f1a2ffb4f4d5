"""Retrieval evaluation: rankings + a benchmark's protocol -> labelled ``Scores``.

The protocol is data, read from ``Benchmark.protocol`` (a dict). Keys read here:

``family`` (required unless ``evaluate(protocol=...)`` names it)
    "lab" (Instance-160/335, INSTRE, synthetic), "trapezoid" (Oxford5k /
    Paris6k classic, Holidays), "revisited" (ROxford5k / RParis6k; queries carry
    ``extra={"easy", "hard", "junk"}``), "gldv2" (ILIAS, GLDv2). "detection"
    and "none" have no ranking to score and are refused with a pointer.
``metrics``
    metric names (claid/evaluation/ap.py): default lab ``mAP-<k>`` for each k
    of ``ks`` + ``mAP-all``; trapezoid ``mAP``; revisited ``mAP``, ``mP-1``,
    ``mP-5``, ``mP-10`` in each of easy/medium/hard; gldv2 ``mAP-at-<k>``.
``k``
    list of cut-offs for gldv2 (ILIAS: [1000]); default ``ks``.
``junk``
    bool, default True: junk images leave the ranking before scoring (ranks
    close up). False keeps them, scored as non-relevant.
``remove_queries_from_db``
    bool, default True for lab and revisited, False otherwise: every query
    image of the benchmark leaves every ranking, and leaves the positives too
    (it is no longer in the database; such positives are counted).
``remove_query_image``
    "auto" (default): a query's own image leaves its own ranking unless its
    ground truth lists it as positive (Holidays skips the query in its results;
    Oxford classic lists query images among the good ones); "always"; "never".
``ties``
    the order of images with exactly equal scores. "later_first" (default for
    lab): the image later in ``Benchmark.database`` comes first, as the lab's
    code ranks (wlzhao22/MSAR ``feature_process.py``: ``np.argsort(sims)[::-1]``
    over the database order); "earlier_first": the earlier one first; "as_ranked"
    (default for the other families): the ranking's own order, which for claid's
    search is the lowest region index first; "pooled" (the ILIAS protocol's
    default): order-free, every positive in a run of equal scores gets the
    precision at the run's end (scikit-learn's AP, the official ILIAS code). Only
    runs of equal consecutive scores are reordered; a ranking is never re-sorted.
``n_relevant``
    |R| of the AP formulas. "ground_truth" (default for lab): the distinct
    images the query's ground-truth list names, including those the protocol
    removed (query images) or the database lacks, as the lab's code divides by
    ``len(grdDict[query])``; a query whose list is non-empty is then scored even
    when none of its positives can be retrieved (AP 0). "reachable" (default for
    the other families, revisitop's and cirtorch's ``len(gnd['ok'])`` since their
    lists hold database images only): the positives still in the database; a
    query without any is left out of the mean.

Other keys (e.g. "query": "crop" | "pool" | "full", read by the pipeline) are
recorded with the result, not interpreted; a key that looks like a misspelling of
one of the above is an error.

Relevant images that a ranking does not hold count as misses. A query left
without positives (see ``n_relevant``) is left out of the mean (as revisitop
does) and listed.
A ranked image that is neither in ``Benchmark.database`` nor removed above is an
error: the rankings and the benchmark do not belong together.

Retrieval localisation ("loc-retrieval") compares the ranking's box of every
relevant image retrieved with ``query.extra["positive_boxes"][image]`` (the
queried instance's box in that image) when the query has that key, else with
``Benchmark.gt_boxes[image]`` (any annotated instance).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from claid.evaluation.ap import metric_function
from claid.evaluation.conventions import KEEPS_ORDER, N_RELEVANT, TIES, check_ties, tie_ordered
from claid.evaluation.ground_truth import (
    all_positives,
    ground_truths,
    reachable_positives,
    removed_images,
)
from claid.evaluation.localization import pairwise_box_iou
from claid.evaluation.revisited_settings import REVISITED_SETTINGS
from claid.structures import Benchmark, Query, Ranking, Scores

__all__ = ["FAMILIES", "RetrievalProtocol", "resolve_protocol", "evaluate", "queries_with_positives"]

FAMILIES: tuple[str, ...] = ("lab", "trapezoid", "revisited", "gldv2")
_NOT_RANKED = {
    "detection": "score detectors with claid.evaluation.detection (recall_vs_iou, "
    "average_recall_greedy, cocoeval_ar, corloc)",
    "none": "the benchmark has no queries (index only); nothing to score",
}
_READ_KEYS = (
    "family", "metrics", "k", "junk", "remove_queries_from_db", "remove_query_image", "ties",
    "n_relevant",
)  # fmt: skip
_SELF_REMOVAL = ("auto", "always", "never")
_MAX_LISTED = 50  # ids listed in settings; the counts are always complete
@dataclass(frozen=True)
class RetrievalProtocol:
    """A resolved retrieval protocol (see the module docstring for the keys)."""

    family: str
    metrics: tuple[str, ...]
    junk: bool = True
    remove_queries_from_db: bool = True
    remove_query_image: str = "auto"
    ties: str = "as_ranked"
    n_relevant: str = "reachable"
    recorded: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown protocol family {self.family!r}; expected one of {FAMILIES}")
        if not self.metrics:
            raise ValueError("a protocol needs at least one metric")
        for name in self.metrics:
            metric_function(name)  # raises on an unknown name
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"metrics listed twice in {list(self.metrics)}")
        check_ties(self.ties, self.metrics)
        if self.n_relevant not in N_RELEVANT:
            raise ValueError(
                f"protocol key 'n_relevant' must be one of {tuple(N_RELEVANT)}, got {self.n_relevant!r}"
            )
        if self.remove_query_image not in _SELF_REMOVAL:
            raise ValueError(
                f"remove_query_image must be one of {_SELF_REMOVAL}, got {self.remove_query_image!r}"
            )


def _int_list(value, what: str) -> list[int]:
    values = [value] if isinstance(value, int | np.integer) else list(value)
    if not values or any(not isinstance(v, int | np.integer) or v < 1 for v in values):
        raise ValueError(f"{what} must be positive integers, got {value!r}")
    return [int(v) for v in values]


def _bool(value, what: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"protocol key {what!r} must be true or false, got {value!r}")
    return bool(value)


def resolve_protocol(
    protocol: Mapping, *, family: str | None = None, ks: Sequence[int] = (50, 100)
) -> RetrievalProtocol:
    """Read a benchmark's protocol dict into a ``RetrievalProtocol``.

    Args:
        protocol: ``Benchmark.protocol``.
        family: overrides ``protocol["family"]``; the dict's "metrics" and "k"
            belong to its own family and are then ignored.
        ks: default cut-offs for lab mAP-k (and gldv2 when the dict has no "k").
    """
    protocol = dict(protocol)
    for key in protocol:
        if key in _READ_KEYS:
            continue
        close = difflib.get_close_matches(key, _READ_KEYS, n=1, cutoff=0.8)
        if close:
            raise ValueError(f"protocol key {key!r} is not known; did you mean {close[0]!r}?")
    chosen = family if family is not None else protocol.get("family")
    if chosen is None:
        raise ValueError(
            "the benchmark's protocol names no 'family' and evaluate() got no protocol=; "
            f"expected one of {FAMILIES}"
        )
    if chosen in _NOT_RANKED:
        raise ValueError(
            f"protocol family {chosen!r} has no ranking to score: {_NOT_RANKED[chosen]}"
        )
    if chosen not in FAMILIES:
        raise ValueError(f"unknown protocol family {chosen!r}; expected one of {FAMILIES}")
    own = family is None or family == protocol.get("family")
    ks = _int_list(ks, "ks")
    if own and "metrics" in protocol:
        metrics = [str(m) for m in protocol["metrics"]]
    elif chosen == "lab":
        metrics = [f"mAP-{k}" for k in ks] + ["mAP-all"]
    elif chosen == "trapezoid":
        metrics = ["mAP"]
    elif chosen == "revisited":
        metrics = ["mAP", "mP-1", "mP-5", "mP-10"]
    else:
        cutoffs = _int_list(protocol["k"], "protocol 'k'") if own and "k" in protocol else ks
        metrics = [f"mAP-at-{k}" for k in cutoffs]
    return RetrievalProtocol(
        family=chosen,
        metrics=tuple(metrics),
        junk=_bool(protocol.get("junk", True), "junk"),
        remove_queries_from_db=_bool(
            protocol.get("remove_queries_from_db", chosen in ("lab", "revisited")),
            "remove_queries_from_db",
        ),
        remove_query_image=str(protocol.get("remove_query_image", "auto")),
        ties=str(protocol.get("ties", "later_first" if chosen == "lab" else "as_ranked")),
        n_relevant=str(protocol.get("n_relevant", "ground_truth" if chosen == "lab" else "reachable")),
        recorded=protocol,
    )


def _rankings_by_query(rankings: Iterable[Ranking], queries: Sequence[Query]) -> dict[str, Ranking]:
    qids = [q.qid for q in queries]
    if len(set(qids)) != len(qids):
        duplicated = sorted({q for q in qids if qids.count(q) > 1})
        raise ValueError(f"the benchmark has duplicate query ids, e.g. {duplicated[:3]}")
    by_qid: dict[str, Ranking] = {}
    for ranking in rankings:
        if ranking.qid in by_qid:
            raise ValueError(f"two rankings for query {ranking.qid!r}")
        n = len(ranking.images)
        if np.asarray(ranking.scores).shape != (n,) or np.asarray(ranking.boxes).shape != (n, 4):
            raise ValueError(
                f"ranking {ranking.qid!r}: {n} images but scores {np.shape(ranking.scores)} and "
                f"boxes {np.shape(ranking.boxes)} (expected ({n},) and ({n}, 4))"
            )
        by_qid[ranking.qid] = ranking
    unknown = sorted(set(by_qid) - set(qids))
    if unknown:
        raise ValueError(f"{len(unknown)} ranking(s) for unknown query ids, e.g. {unknown[:3]}")
    missing = [q for q in qids if q not in by_qid]
    if missing:
        raise ValueError(
            f"{len(missing)} quer(y/ies) have no ranking, e.g. {missing[:3]} "
            "(a query that found nothing needs an empty Ranking)"
        )
    return by_qid


def _positions(position: dict[str, int], images: Iterable[str]) -> np.ndarray:
    """Sorted 0-based ranks of the given images among those the ranking holds."""
    return np.sort(np.fromiter((position[i] for i in images if i in position), dtype=np.int64))


def queries_with_positives(benchmark: Benchmark, protocol: str | None = None) -> list[Query]:
    """The queries of ``benchmark`` that have at least one positive in some setting of
    its protocol: the ones :func:`evaluate` can score (a query without any is searched
    but left out of every mean, and counted)."""
    spec = resolve_protocol(benchmark.protocol, family=protocol)
    return [q for q in benchmark.queries if all_positives(q, spec)]


def evaluate(
    rankings: Sequence[Ranking],
    benchmark: Benchmark,
    *,
    protocol: str | None = None,
    ks: Sequence[int] = (50, 100),
    per_query: bool = False,
) -> list[Scores]:
    """Score the rankings of every query of a benchmark under its protocol.

    Args:
        rankings: one ``Ranking`` per query of ``benchmark`` (images best first).
        benchmark: queries, ground truth, database and ``protocol`` dict.
        protocol: a family name overriding ``benchmark.protocol["family"]``.
        ks: lab mAP-k cut-offs (and gldv2 cut-offs when the protocol has no "k").
        per_query: also record every query's values in ``settings["per_query"]``.
    Returns:
        ``[Scores(protocol=<family>)]``, followed by
        ``Scores(protocol="loc-retrieval")`` (IoU of the returned box against
        the ground truth, over the relevant images retrieved) when ground-truth
        boxes exist for some retrieved relevant image. Values are fractions in
        [0, 1]; revisited keys are "<setting>/<metric>".
    """
    spec = resolve_protocol(benchmark.protocol, family=protocol, ks=ks)
    by_qid = _rankings_by_query(rankings, benchmark.queries)
    query_images = {q.image for q in benchmark.queries if q.image is not None}
    database = set(benchmark.database)
    database_index = (
        {image: i for i, image in enumerate(benchmark.database)}
        if spec.ties not in KEEPS_ORDER
        else {}
    )
    n_reordered = 0
    functions = {name: metric_function(name) for name in spec.metrics}

    settings_names = list(REVISITED_SETTINGS) if spec.family == "revisited" else [""]
    sums = {s: dict.fromkeys(spec.metrics, 0.0) for s in settings_names}
    scored = dict.fromkeys(settings_names, 0)
    skipped: dict[str, list[str]] = {s: [] for s in settings_names}
    per_query_values: dict[str, dict[str, float]] = {}
    n_unreachable = 0
    n_junk_removed = dict.fromkeys(settings_names, 0)
    lengths: list[int] = []
    loc_pairs: list[tuple[np.ndarray, np.ndarray]] = []
    loc_missing_gt = 0
    gt_source = (
        "query.extra['positive_boxes']"
        if any("positive_boxes" in q.extra for q in benchmark.queries)
        else "benchmark.gt_boxes (any annotated instance of the image)"
    )

    for query in benchmark.queries:
        ranking = tie_ordered(by_qid[query.qid], spec.ties, database_index)
        n_reordered += ranking is not by_qid[query.qid]
        removed = removed_images(query, spec, query_images)
        # One dict pass per ranking; everything else works on the few ids the
        # ground truth names (rankings can hold the whole database).
        position = dict(zip(ranking.images, range(len(ranking.images))))
        if len(position) != len(ranking.images):
            raise ValueError(f"ranking {query.qid!r} lists an image more than once")
        removed_at = _positions(position, removed)
        if database and not database.issuperset(position):
            strangers = [i for i in ranking.images if i not in database and i not in removed]
            if strangers:
                raise ValueError(
                    f"ranking {query.qid!r} holds {len(strangers)} image(s) that are not in "
                    f"benchmark {benchmark.name!r}'s database, e.g. {strangers[:3]}"
                )
        lengths.append(len(position) - removed_at.size)
        retrieved_positives: set[str] = set()
        for setting, (positives, junk) in ground_truths(query, spec).items():
            clash = positives & junk
            if clash:
                raise ValueError(
                    f"query {query.qid!r}: {len(clash)} image(s) are both positive and junk, "
                    f"e.g. {sorted(clash)[:3]}"
                )
            reachable, n_relevant = reachable_positives(positives, removed, database, spec)
            n_unreachable += len(positives) - len(reachable)
            junk_at = _positions(position, junk - removed) if spec.junk else removed_at[:0]
            n_junk_removed[setting] += junk_at.size
            if n_relevant == 0:
                skipped[setting].append(query.qid)
                continue
            dropped = np.union1d(removed_at, junk_at)
            found_at = _positions(position, reachable)
            relevance = np.zeros(len(position) - dropped.size, dtype=bool)
            relevance[found_at - np.searchsorted(dropped, found_at)] = True
            scored[setting] += 1
            retrieved_positives |= reachable
            # pooled ties: the scores of the list scored, for the metrics to find runs in
            kept = np.delete(np.asarray(ranking.scores), dropped) if spec.ties == "pooled" else None
            for name, (function, _) in functions.items():
                value = function(relevance, n_relevant, kept)
                sums[setting][name] += value
                if per_query:
                    key = f"{setting}/{name}" if setting else name
                    per_query_values.setdefault(query.qid, {})[key] = value
        boxes = query.extra.get("positive_boxes", benchmark.gt_boxes)
        for image in sorted(retrieved_positives):  # set order follows PYTHONHASHSEED
            if image not in position:
                continue
            gt = boxes.get(image)
            if gt is None or np.asarray(gt).size == 0:
                loc_missing_gt += 1
                continue
            loc_pairs.append((np.asarray(ranking.boxes[position[image]]), np.asarray(gt)))

    if not any(scored.values()):
        raise ValueError(
            f"no query of benchmark {benchmark.name!r} has a positive in the database: "
            "nothing to score"
        )
    values: dict[str, float] = {}
    for setting in settings_names:
        if scored[setting] == 0:
            continue
        for name in spec.metrics:
            key = f"{setting}/{name}" if setting else name
            values[key] = sums[setting][name] / scored[setting]
    settings: dict = {
        "benchmark": benchmark.name,
        "family": spec.family,
        "family_override": protocol is not None and protocol != spec.recorded.get("family"),
        "metrics": {name: definition for name, (_, definition) in functions.items()},
        "values_are": "fractions in [0, 1], means over the queries scored",
        "junk": "removed from the ranking before scoring" if spec.junk else "kept as non-relevant",
        "remove_queries_from_db": spec.remove_queries_from_db,
        "remove_query_image": spec.remove_query_image,
        "ties": {"rule": spec.ties, "definition": TIES[spec.ties], "n_rankings_reordered": n_reordered},
        "n_relevant": {"rule": spec.n_relevant, "definition": N_RELEVANT[spec.n_relevant]},
        "relevant_not_ranked": "counted as misses",
        "n_queries": len(benchmark.queries),
        "n_queries_scored": scored if spec.family == "revisited" else scored[""],
        "queries_skipped_no_positive": {
            s or "all": {"count": len(q), "qids": q[:_MAX_LISTED]} for s, q in skipped.items()
        },
        "n_positives_not_in_database": n_unreachable,
        "n_junk_images_removed": n_junk_removed
        if spec.family == "revisited"
        else n_junk_removed[""],
        "ranking_length": {"min": min(lengths), "max": max(lengths)},
        "protocol": spec.recorded,
    }
    if per_query:
        settings["per_query"] = per_query_values
    results = [Scores(protocol=spec.family, values=values, settings=settings)]

    if loc_pairs:
        loc_values = {}
        for iou in ("standard", "enclosing"):
            best = [float(pairwise_box_iou(box, gt, iou=iou).max()) for box, gt in loc_pairs]
            loc_values[f"mIoU-{iou}"] = float(np.mean(best))
        results.append(
            Scores(
                protocol="loc-retrieval",
                values=loc_values,
                settings={
                    "benchmark": benchmark.name,
                    "definition": "for every (query, relevant image it retrieved) pair: best IoU "
                    "of the ranking's box with the image's ground-truth boxes; mean over pairs",
                    "gt_source": gt_source,
                    "n_pairs": len(loc_pairs),
                    "n_pairs_without_gt": loc_missing_gt,
                    "box_end": "as the ranking gives it (pixels, exclusive end)",
                },
            )
        )
    return results
