"""Two conventions on which evaluation code bases part, as named protocol options.

``ties`` (how images with exactly equal scores are ordered) and ``n_relevant``
(what |R| of the AP formulas counts); ``protocols.evaluate`` reads both from the
protocol dict and records the rule and its definition with every result. The
lab protocol follows the lab's code (wlzhao22/MSAR ``feature_process.py``) by
default: ``later_first`` and ``ground_truth``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from claid.evaluation.ap import pools_ties
from claid.structures import Benchmark, Ranking

__all__ = ["KEEPS_ORDER", "N_RELEVANT", "TIES", "check_ties", "tie_ordered", "with_conventions"]

TIES: dict[str, str] = {
    "later_first": "equal scores: the image later in the benchmark's database order first "
    "(the lab's reversed np.argsort)",
    "earlier_first": "equal scores: the image earlier in the benchmark's database order first",
    "as_ranked": "equal scores keep the ranking's order (claid's search: lowest region index first)",
    "pooled": "every positive in a run of equal scores gets the precision at the end of the run "
    "(scikit-learn's average_precision_score, the official ILIAS evaluation); order-free",
}
#: the ``ties`` rules that leave a ranking's order as it is
KEEPS_ORDER: tuple[str, ...] = ("as_ranked", "pooled")
N_RELEVANT: dict[str, str] = {
    "ground_truth": "|R| = distinct images named by the query's ground-truth list, removed "
    "query images and images missing from the database included (the lab's len(gt))",
    "reachable": "|R| = positives still in the database after the protocol's removals",
}


def tie_ordered(ranking: Ranking, ties: str, database_index: Mapping[str, int]) -> Ranking:
    """The ranking with every run of exactly equal consecutive scores put in ``ties`` order
    (unchanged for the rules in ``KEEPS_ORDER``: "pooled" is applied by the metrics).

    Args:
        ranking: images best first with their (N,) scores and (N, 4) boxes.
        ties: a key of ``TIES``.
        database_index: image id -> position in the benchmark's database order
            (images it lacks, e.g. removed query images, sort after it in a run;
            they leave the list before scoring, so their place does not matter).
    Returns:
        The same ranking object when nothing moves, else a reordered copy.
    """
    scores = np.asarray(ranking.scores)
    n = len(ranking.images)
    if ties in KEEPS_ORDER or n < 2:
        return ranking
    if ties not in TIES:
        raise ValueError(f"protocol key 'ties' must be one of {tuple(TIES)}, got {ties!r}")
    starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])
    if starts.size == n:
        return ranking
    if not database_index:
        raise ValueError(
            f"ranking {ranking.qid!r} has equal scores and protocol key 'ties'={ties!r} orders them "
            "by the benchmark's database, which is empty; set ties: as_ranked"
        )
    # only entries in runs of two or more can move: look up just those (a ranking of
    # every image of a 27k collection has a handful of exact ties)
    lengths = np.diff(np.r_[starts, n])
    run = np.repeat(np.arange(starts.size), lengths)
    tied = np.flatnonzero(np.repeat(lengths > 1, lengths))
    position = np.fromiter(
        (database_index.get(ranking.images[i], len(database_index) + i) for i in tied.tolist()),
        dtype=np.int64,
        count=tied.size,
    )
    moved = tied[np.lexsort((-position if ties == "later_first" else position, run[tied]))]
    if np.array_equal(moved, tied):
        return ranking
    order = np.arange(n)
    order[tied] = moved
    images = list(ranking.images)
    for i, j in zip(tied.tolist(), moved.tolist()):
        images[i] = ranking.images[j]
    return Ranking(
        qid=ranking.qid,
        images=images,
        scores=scores[order],
        boxes=np.asarray(ranking.boxes)[order],
    )


def check_ties(ties: str, metrics: Sequence[str]) -> None:
    """ValueError unless ``ties`` is a key of ``TIES`` that every metric can apply."""
    if ties not in TIES:
        raise ValueError(f"protocol key 'ties' must be one of {tuple(TIES)}, got {ties!r}")
    if ties == "pooled":
        refused = [name for name in metrics if not pools_ties(name)]
        if refused:
            raise ValueError(
                f"ties: pooled applies to precision-at-hit metrics only, not {refused}; "
                "choose another ties rule or drop those metrics"
            )


def with_conventions(benchmark: Benchmark, options: Mapping[str, Any] | None) -> Benchmark:
    """The benchmark with ``ties`` / ``n_relevant`` set in its protocol where ``options``
    gives a value (None keeps the dataset's choice or the family's default).

    Args:
        benchmark: as a loader returned it.
        options: e.g. the run config's ``evaluation`` node, {"ties": "as_ranked",
            "n_relevant": None}; any other key is an error.
    Returns:
        A copy with an updated ``protocol`` dict, or ``benchmark`` itself when
        nothing is set.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - {"ties", "n_relevant"})
    if unknown:
        raise ValueError(f"evaluation.{unknown[0]} is not a known option; expected ties, n_relevant")
    chosen = {k: str(v) for k, v in options.items() if v is not None}
    if "ties" in chosen and chosen["ties"] not in TIES:
        raise ValueError(f"evaluation.ties must be one of {tuple(TIES)}, got {chosen['ties']!r}")
    if "n_relevant" in chosen and chosen["n_relevant"] not in N_RELEVANT:
        raise ValueError(
            f"evaluation.n_relevant must be one of {tuple(N_RELEVANT)}, got {chosen['n_relevant']!r}"
        )
    if not chosen:
        return benchmark
    return dataclasses.replace(benchmark, protocol={**benchmark.protocol, **chosen})
