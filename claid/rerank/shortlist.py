"""The head of a ranking that a shortlist re-ranker (SuperGlobal, AMES) re-orders, and
the ranking put back together.

The shortlist is the first ``m`` images of the list that the protocol evaluates: the
images it leaves out (own image, other query images, junk) are skipped before the list
is cut, as alpha-QE does; a shorter list gives a shorter shortlist. The re-ordered
shortlist comes first, then the skipped images of that head in their order, then the
rest of the list unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice

import numpy as np

from claid.structures import Ranking


def shortlist(ranking: Ranking, dropped: set[str], m: int, usable: Callable[[str], bool]) -> list[int]:
    """Positions in ``ranking`` of its first ``m`` images not in ``dropped`` and ``usable``."""
    return list(islice((p for p, image in enumerate(ranking.images) if image not in dropped and usable(image)), m))


def reorder_head(ranking: Ranking, head: list[int], order: np.ndarray, scores: np.ndarray) -> Ranking:
    """``ranking`` with the images at positions ``head`` put first in ``order`` (indices
    into ``head``) with ``scores`` (one per ``order`` entry); boxes travel with images."""
    if not head:
        return ranking
    taken = set(head)
    end = head[-1] + 1
    positions = np.r_[np.asarray(head, np.int64)[np.asarray(order, np.int64)],
                      [p for p in range(end) if p not in taken], np.arange(end, len(ranking.images))]
    positions = positions.astype(np.int64)
    new_scores = np.asarray(ranking.scores, np.float32)[positions].copy()
    new_scores[: len(head)] = scores
    return Ranking(qid=ranking.qid, images=[ranking.images[p] for p in positions], scores=new_scores,
                   boxes=np.asarray(ranking.boxes, np.float32).reshape(-1, 4)[positions])
