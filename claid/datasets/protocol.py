"""The protocol dict a loader attaches to its Benchmark: how the evaluator scores it."""

from __future__ import annotations

FAMILIES = ("lab", "trapezoid", "revisited", "gldv2", "detection", "none")
QUERY_MODES = ("crop", "pool", "full")


def make_protocol(
    family: str,
    *,
    query: str,
    remove_queries_from_db: bool,
    junk: bool,
    **details,
) -> dict:
    """Build and validate a Benchmark.protocol dict.

    Args:
        family: one of :data:`FAMILIES` (which evaluator scores the benchmark).
        query: how the query image is described: "crop" (cropped to its box),
            "pool" (pooled from the full image's features over the box) or
            "full" (the whole image).
        remove_queries_from_db: whether every query image left the database.
        junk: whether queries carry junk images to drop from the ranking.
        details: anything else to record (ground-truth file, checksum, copy...),
            or an evaluator key such as ``k`` (gldv2 cut-offs) or
            ``remove_query_image``. Metric names are left to the evaluator's
            defaults for the family.
    """
    if family not in FAMILIES:
        raise ValueError(f"protocol family {family!r} is not one of {FAMILIES}")
    if query not in QUERY_MODES:
        raise ValueError(f"query mode {query!r} is not one of {QUERY_MODES}")
    return {
        "family": family,
        "query": query,
        "remove_queries_from_db": bool(remove_queries_from_db),
        "junk": bool(junk),
        **details,
    }
