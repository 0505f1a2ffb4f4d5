"""One query's ground truth as its protocol reads it: which images leave its ranking,
which count as positives and junk in each setting, and |R| of the AP formulas.

:func:`claid.evaluation.protocols.evaluate` scores with these, and the run's per-query
records (:mod:`claid.evaluation.query_records`) mark every saved result with them, so
a mark and the AP it explains never come from two copies of the rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from claid.evaluation.revisited_settings import REVISITED_SETTINGS, revisited_ground_truth
from claid.structures import Query

if TYPE_CHECKING:
    from claid.evaluation.protocols import RetrievalProtocol

__all__ = ["all_positives", "ground_truths", "reachable_positives", "removed_images"]


def ground_truths(query: Query, spec: RetrievalProtocol) -> dict[str, tuple[set[str], set[str]]]:
    """Setting name ("" outside revisited, else easy / medium / hard) -> (positives, junk)."""
    if spec.family == "revisited":
        return {s: revisited_ground_truth(query, s) for s in REVISITED_SETTINGS}
    return {"": (set(query.positives), set(query.junk))}


def all_positives(query: Query, spec: RetrievalProtocol) -> set[str]:
    """The images positive in some setting of the protocol."""
    return set().union(*(pos for pos, _ in ground_truths(query, spec).values()))


def removed_images(query: Query, spec: RetrievalProtocol, query_images: set[str]) -> set[str]:
    """The images the protocol takes out of ``query``'s ranking (and positives) before
    scoring: every query image of the benchmark (``query_images``) when
    ``remove_queries_from_db``, and the query's own image under ``remove_query_image``."""
    removed: set[str] = query_images if spec.remove_queries_from_db else set()
    if query.image is not None and (
        spec.remove_query_image == "always"
        or (spec.remove_query_image == "auto" and query.image not in all_positives(query, spec))
    ):
        removed = removed | {query.image}
    return removed


def reachable_positives(
    positives: set[str], removed: set[str], database: set[str], spec: RetrievalProtocol
) -> tuple[set[str], int]:
    """(the positives still in the database, |R| under the protocol's ``n_relevant`` rule).

    ``database`` empty means "no database list": every positive not removed is reachable.
    """
    reachable = positives - removed
    if database:
        reachable &= database
    return reachable, len(reachable) if spec.n_relevant == "reachable" else len(positives)
