"""Average-precision variants over one query's ranked list, as pure functions.

Every function takes ``relevance``: a 1-D bool array over the ranked list,
best first, *after* junk images were removed (rank 1 is ``relevance[0]``), and
``n_relevant``: |R|, the number of relevant images in the database, ranked or
not. Relevant images that the list does not hold count as misses.

The variants (PROTOCOLS.md sec. 1, test vector relevance 1,0,0,1,1, |R| = 3, k = 4):

=====================  ==========================================  =======
metric name            definition                                  vector
=====================  ==========================================  =======
``mAP-<k>``            lab: cut at n = min(k, |R|),                0.3333
                       (1/n) sum_{i<=n} rel(i) P(i)
``mAP-all``            lab: (1/|R|) sum_i rel(i) P(i), whole list  0.7000
``mAP-at-<k>``         GLDv2 / ILIAS: scan k ranks,                0.5000
                       divide by min(k, |R|)
``mAP-at-<k>-hits``    scan k ranks, divide by the hits in them     0.7500
                       (widely used, widely called wrong)
``mAP``                trapezoid AP (Oxford/Paris compute_ap,       0.6556
                       Holidays, revisitop)
``mP-<k>``             revisitop precision: hits in the first
                       k' = min(k, rank of the last ranked
                       positive) ranks, divided by k'
``P-<k>``              plain precision: hits in the first k / k
=====================  ==========================================  =======

Metric names use only characters MLflow accepts in metric keys (no ``@``).

**Pooled ties.** The precision-at-hit variants (``mAP-<k>``, ``mAP-all``,
``mAP-at-<k>``, ``mAP-at-<k>-hits``) also take ``scores``, the (N',) scores of the
same list: every positive in a run of equal consecutive scores then gets the
precision at the end of the run (a run cut by a rank cut-off ends there), as
scikit-learn's ``average_precision_score`` (the ILIAS evaluation) scores ties. The
result no longer depends on the order inside a run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np

__all__ = [
    "relevance_vector",
    "lab_ap_at_k",
    "lab_ap_all",
    "gldv2_ap_at_k",
    "hits_normalised_ap_at_k",
    "trapezoid_ap",
    "revisitop_precision_at_k",
    "precision_at_k",
    "metric_function",
    "pools_ties",
    "METRIC_DEFINITIONS",
]


def relevance_vector(
    ranked: Sequence[str], positives: Iterable[str], junk: Iterable[str] = ()
) -> np.ndarray:
    """Relevance of a ranked list of image ids after removing junk.

    Args:
        ranked: image ids, best first, each at most once.
        positives: relevant image ids.
        junk: image ids dropped from the list before scoring (ranks close up).
    Returns:
        (N',) bool, N' = len(ranked) minus the junk images found in it.
    """
    positives = set(positives)
    junk = set(junk)
    overlap = positives & junk
    if overlap:
        raise ValueError(
            f"{len(overlap)} image(s) are both positive and junk, e.g. {sorted(overlap)[:3]}"
        )
    return np.fromiter((image in positives for image in ranked if image not in junk), dtype=bool)


def _check(
    relevance: np.ndarray, n_relevant: int, k: int | None = None, scores: np.ndarray | None = None
) -> np.ndarray:
    relevance = np.asarray(relevance)
    if scores is not None and np.shape(scores) != relevance.shape:
        raise ValueError(f"scores {np.shape(scores)} do not match relevance {relevance.shape}")
    if relevance.ndim != 1:
        raise ValueError(f"relevance must be 1-D, got shape {relevance.shape}")
    relevance = relevance.astype(bool)
    if int(n_relevant) < 1:
        raise ValueError(
            f"n_relevant must be >= 1 (AP is undefined without positives), got {n_relevant}"
        )
    hits = int(relevance.sum())
    if hits > n_relevant:
        raise ValueError(f"the list holds {hits} relevant images but n_relevant is {n_relevant}")
    if k is not None and int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return relevance


def _precision_at_hits(relevance: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
    """P(i) at every relevant rank i (1-based), in rank order; with ``scores`` (as
    long as ``relevance`` or longer, cut to it) the precision at the end of i's run
    of equal scores instead (pooled ties)."""
    ranks = np.flatnonzero(relevance) + 1
    if scores is None:
        return np.arange(1, ranks.size + 1) / ranks
    scores = np.asarray(scores)[: relevance.size]
    run_ends = np.r_[np.flatnonzero(scores[1:] != scores[:-1]), relevance.size - 1]
    ends = run_ends[np.searchsorted(run_ends, ranks - 1)]
    return np.cumsum(relevance)[ends] / (ends + 1)


def lab_ap_at_k(
    relevance: np.ndarray, n_relevant: int, k: int, scores: np.ndarray | None = None
) -> float:
    """The lab's mAP-k term for one query: cut the list at n = min(k, |R|),
    AP = (1/n) * sum_{i<=n} rel(i) P(i). Ranks after n are not looked at.
    ``scores``: pool ties (module docstring)."""
    relevance = _check(relevance, n_relevant, k, scores)
    n = min(int(k), int(n_relevant))
    return float(_precision_at_hits(relevance[:n], scores).sum() / n)


def lab_ap_all(relevance: np.ndarray, n_relevant: int, scores: np.ndarray | None = None) -> float:
    """Non-interpolated AP over the whole list: (1/|R|) * sum_i rel(i) P(i).
    ``scores``: pool ties (module docstring)."""
    relevance = _check(relevance, n_relevant, scores=scores)
    return float(_precision_at_hits(relevance, scores).sum() / n_relevant)


def gldv2_ap_at_k(
    relevance: np.ndarray, n_relevant: int, k: int, scores: np.ndarray | None = None
) -> float:
    """GLDv2 / ILIAS AP@k: (1/min(k, |R|)) * sum_{i<=k} rel(i) P(i).
    With ``scores`` (pooled ties) it equals the official ILIAS evaluation:
    ``average_precision_score`` over the first k, times hits / min(k, |R|)."""
    relevance = _check(relevance, n_relevant, k, scores)
    precisions = _precision_at_hits(relevance[: int(k)], scores)
    return float(precisions.sum() / min(int(k), int(n_relevant)))


def hits_normalised_ap_at_k(
    relevance: np.ndarray, n_relevant: int, k: int, scores: np.ndarray | None = None
) -> float:
    """AP@k divided by the number of hits in the first k ranks (0 when none).

    Rewards a list that finds one positive at rank 1 and nothing else with 1.0,
    which is why it is called wrong; offered to reproduce papers that use it.
    ``n_relevant`` is only checked, not used.
    """
    relevance = _check(relevance, n_relevant, k, scores)
    precisions = _precision_at_hits(relevance[: int(k)], scores)
    return float(precisions.mean()) if precisions.size else 0.0


def trapezoid_ap(relevance: np.ndarray, n_relevant: int) -> float:
    """Trapezoid-rule area under the precision-recall curve.

    Each positive at 0-based rank r, being the j-th (0-based) positive, adds
    (1/|R|) * (P_before + P_after) / 2 with P_before = j / r (1 when r = 0) and
    P_after = (j + 1) / (r + 1): Oxford's compute_ap.cpp, Holidays' and
    revisitop's compute_ap.
    """
    relevance = _check(relevance, n_relevant)
    ranks = np.flatnonzero(relevance).astype(np.float64)
    j = np.arange(ranks.size, dtype=np.float64)
    before = np.divide(j, ranks, out=np.ones_like(ranks), where=ranks > 0)
    after = (j + 1) / (ranks + 1)
    return float(((before + after) / 2).sum() / n_relevant)


def revisitop_precision_at_k(relevance: np.ndarray, k: int) -> float:
    """revisitop's mP@k term: k' = min(k, 1-based rank of the last ranked
    positive), precision = hits in the first k' ranks / k'. 0 when no positive
    is ranked (revisitop always ranks the whole database, so never meets that case)."""
    relevance = np.asarray(relevance, dtype=bool)
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ranks = np.flatnonzero(relevance) + 1
    if ranks.size == 0:
        return 0.0
    k_eff = min(int(k), int(ranks.max()))
    return float((ranks <= k_eff).sum() / k_eff)


def precision_at_k(relevance: np.ndarray, k: int) -> float:
    """Hits in the first k ranks divided by k (a short list counts as misses)."""
    relevance = np.asarray(relevance, dtype=bool)
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return float(relevance[: int(k)].sum() / int(k))


METRIC_DEFINITIONS: dict[str, str] = {
    "mAP-<k>": "lab mAP-k: cut at n=min(k,|R|), (1/n) sum_{i<=n} rel(i)P(i)",
    "mAP-all": "lab mAP-all: (1/|R|) sum_i rel(i)P(i) over the whole ranked list",
    "mAP-at-<k>": "GLDv2/ILIAS AP@k: (1/min(k,|R|)) sum_{i<=k} rel(i)P(i)",
    "mAP-at-<k>-hits": "AP@k divided by the hits in the first k ranks",
    "mAP": "trapezoid AP (Oxford compute_ap.cpp, Holidays, revisitop)",
    "mP-<k>": "revisitop precision: hits in first k'=min(k, last positive rank) / k'",
    "P-<k>": "precision at k: hits in first k / k",
}

_PATTERNS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"mAP-(\d+)"), "lab-k"),
    (re.compile(r"mAP-all"), "lab-all"),
    (re.compile(r"mAP-at-(\d+)"), "gldv2"),
    (re.compile(r"mAP-at-(\d+)-hits"), "hits"),
    (re.compile(r"mAP"), "trapezoid"),
    (re.compile(r"mP-(\d+)"), "revisitop-precision"),
    (re.compile(r"P-(\d+)"), "precision"),
]


_POOLING_KINDS = ("lab-k", "lab-all", "gldv2", "hits")


def _unpooled(function: Callable, name: str) -> Callable[..., float]:
    def scored(relevance: np.ndarray, n_relevant: int, scores: np.ndarray | None = None) -> float:
        if scores is not None:
            raise ValueError(f"metric {name!r} has no pooled-ties form (ties: pooled)")
        return function(relevance, n_relevant)

    return scored


def _with_k(function: Callable, k: int, *, uses_n: bool = True) -> Callable[..., float]:
    if uses_n:
        return lambda relevance, n_relevant, scores=None: function(relevance, n_relevant, k, scores)
    return lambda relevance, n_relevant: function(relevance, k)


def _kind(name: str) -> str | None:
    for pattern, kind in _PATTERNS:
        if pattern.fullmatch(name):
            return kind
    return None


def pools_ties(name: str) -> bool:
    """Whether metric ``name`` has a pooled-ties form (it takes ``scores``)."""
    return _kind(name) in _POOLING_KINDS


def metric_function(name: str) -> tuple[Callable[..., float], str]:
    """Parse a metric name (table in the module docstring) into a per-query
    function ``f(relevance, n_relevant, scores=None) -> float`` and its definition
    text; ``scores`` pools ties where :func:`pools_ties` says the metric can, and is
    refused (ValueError) by the others."""
    function, definition = _metric_function(name)
    return (function, definition) if pools_ties(name) else (_unpooled(function, name), definition)


def _metric_function(name: str) -> tuple[Callable[..., float], str]:
    for pattern, kind in _PATTERNS:
        match = pattern.fullmatch(name)
        if match is None:
            continue
        k = int(match.group(1)) if match.groups() else 0
        if match.groups() and k < 1:
            raise ValueError(f"metric {name!r}: k must be >= 1")
        if kind == "lab-k":
            return _with_k(lab_ap_at_k, k), METRIC_DEFINITIONS["mAP-<k>"]
        if kind == "lab-all":
            return lab_ap_all, METRIC_DEFINITIONS["mAP-all"]
        if kind == "gldv2":
            return _with_k(gldv2_ap_at_k, k), METRIC_DEFINITIONS["mAP-at-<k>"]
        if kind == "hits":
            return _with_k(hits_normalised_ap_at_k, k), METRIC_DEFINITIONS["mAP-at-<k>-hits"]
        if kind == "trapezoid":
            return trapezoid_ap, METRIC_DEFINITIONS["mAP"]
        if kind == "revisitop-precision":
            return _with_k(revisitop_precision_at_k, k, uses_n=False), METRIC_DEFINITIONS["mP-<k>"]
        return _with_k(precision_at_k, k, uses_n=False), METRIC_DEFINITIONS["P-<k>"]
    raise ValueError(f"unknown metric name {name!r}; known forms: {', '.join(METRIC_DEFINITIONS)}")
