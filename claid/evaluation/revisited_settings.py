"""Revisited Oxford / Paris ground truth: the Easy, Medium and Hard settings.

Radenovic et al. 2018 (revisitop ``example_evaluate.py``), PROTOCOLS.md sec. 3:

- Easy:   positives = easy,        junk = junk + hard
- Medium: positives = easy + hard, junk = junk
- Hard:   positives = hard,        junk = junk + easy

A query with no positive in a setting is left out of that setting's mean (as
revisitop does) and counted.
"""

from __future__ import annotations

from claid.structures import Query

__all__ = ["REVISITED_SETTINGS", "revisited_ground_truth"]

REVISITED_SETTINGS: tuple[str, ...] = ("easy", "medium", "hard")


def revisited_ground_truth(query: Query, setting: str) -> tuple[set[str], set[str]]:
    """(positives, junk) image-id sets of one revisited query in one setting.

    Args:
        query: a query whose ``extra`` holds the lists "easy", "hard" and "junk".
        setting: "easy", "medium" or "hard".
    """
    if setting not in REVISITED_SETTINGS:
        raise ValueError(
            f"unknown revisited setting {setting!r}; expected one of {REVISITED_SETTINGS}"
        )
    missing = [key for key in ("easy", "hard", "junk") if key not in query.extra]
    if missing:
        raise ValueError(
            f"query {query.qid!r} has no {missing} in extra: a revisited query needs "
            "extra={'easy': [...], 'hard': [...], 'junk': [...]}"
        )
    easy = set(query.extra["easy"])
    hard = set(query.extra["hard"])
    junk = set(query.extra["junk"])
    clash = (easy & hard) | ((easy | hard) & junk)
    if clash:
        raise ValueError(
            f"query {query.qid!r}: {len(clash)} image(s) are in more than one of easy/hard/junk, "
            f"e.g. {sorted(clash)[:3]}"
        )
    if setting == "easy":
        return easy, junk | hard
    if setting == "medium":
        return easy | hard, junk
    return hard, junk | easy
