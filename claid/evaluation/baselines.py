"""The same queries scored two other ways, beside every run's metrics: the chance
level (the run's own rankings shuffled) and one global descriptor per image."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from claid.structures import Ranking

log = logging.getLogger(__name__)

#: Ranked entries shuffled and scored for the chance level at most (~10 s here).
SHUFFLE_BUDGET = 20_000_000


def shuffled(rankings: list[Ranking], seed: int | np.random.Generator) -> list[Ranking]:
    """The same ranked lists in random order (one draw of the chance baseline)."""
    rng = np.random.default_rng(seed)
    out = []
    for r in rankings:
        order = rng.permutation(len(r.images))
        images = np.asarray(r.images, dtype=object)[order].tolist()
        out.append(Ranking(r.qid, images, r.scores[order], r.boxes[order]))
    return out


def shuffle_repeats(n_queries: int, draws: int, ranked_entries: int = 0) -> int:
    """How many times to shuffle every ranking so that about ``draws`` shuffled
    rankings are averaged (many repeats for a few queries, one for thousands),
    capped so that repeats x ``ranked_entries`` (the total length of the
    rankings) stays within :data:`SHUFFLE_BUDGET`; always at least one."""
    if draws < 1:
        raise ValueError(f"search.shuffle_draws must be >= 1, got {draws}")
    wanted = math.ceil(draws / max(1, n_queries))
    affordable = SHUFFLE_BUDGET // max(1, ranked_entries)
    return max(1, min(wanted, affordable))


def shuffle_repeats_of(rankings: list[Ranking], draws: int) -> int:
    """:func:`shuffle_repeats` for these rankings (their count and total length)."""
    entries = sum(len(r.images) for r in rankings)
    return shuffle_repeats(len(rankings), int(draws), entries)


def retrieval_only(metrics: dict[str, float]) -> dict[str, float]:
    """Drop the localisation entries (they do not change with the ranking order)."""
    return {k: v for k, v in metrics.items() if not k.startswith("loc")}


def shuffled_scores(rankings: list[Ranking], bench, seed: int, repeats: int) -> dict[str, float]:
    """Retrieval metrics of the same ranked lists in random order, averaged over
    ``repeats`` seeded shuffles: one shuffle of 20 queries is too noisy a chance level
    (30 single draws of mAP-50 ranged 0.021-0.091 on the default synthetic run)."""
    from claid.evaluation.protocols import evaluate
    from claid.evaluation.scores_out import scores_to_metrics

    if repeats < 1:
        raise ValueError(f"shuffle repeats must be >= 1, got {repeats}")
    rng = np.random.default_rng(seed)
    draws = [
        retrieval_only(scores_to_metrics(evaluate(shuffled(rankings, rng), bench)))
        for _ in range(repeats)
    ]
    return {key: float(np.mean([d[key] for d in draws])) for key in draws[0]}


@dataclass(frozen=True)
class BaselineSettings:
    """What the baselines read.

    Attributes:
        index: the run's index preset (the ``index`` node without ``k``): the global
            baseline is searched with it.
        k: ``index.k``; the global baseline's rankings hold at most k images.
        seed: the run's seed (shuffles, index training).
        shuffle_draws: ``search.shuffle_draws``, shuffled rankings averaged for the chance level.
        global_baseline: ``search.global_baseline``, score one global descriptor per image.
        memory_gb: ``search.memory_gb``, the exhaustive search's working memory.
    """

    index: dict = field(default_factory=lambda: {"_target_": "claid.index.build_index", "_partial_": True,
                                                 "factory": "Flat"})
    k: int | None = None
    seed: int = 0
    shuffle_draws: int = 2000
    global_baseline: bool = True
    memory_gb: float = 0.5


@dataclass
class BaselineOutcome:
    """The baselines' scores (``{"shuffled": metrics, "global_descriptor": metrics}``,
    retrieval metrics only), how the global baseline was searched or why it was skipped
    (``notes``), and how often each ranking was shuffled (``shuffle_repeats``)."""

    scores: dict
    notes: dict
    shuffle_repeats: int


def baseline_scores(settings: BaselineSettings, bench, rankings: list[Ranking], query_vectors: np.ndarray,
                    whole, store) -> BaselineOutcome:
    """The chance level and, when whole-image vectors exist and
    ``search.global_baseline`` is on, the global-descriptor baseline.

    The global baseline is searched like the regions: the same index preset
    and the same ``index.k``, so it is exact only when the run's index is, and with
    k set its rankings hold at most k images.

    Args:
        settings: the index preset, k, seed and draws (:class:`BaselineSettings`).
        rankings: the run's rankings of ``bench.queries``.
        query_vectors: (n_queries, D) float32, in ``bench.queries`` order.
        whole: (n_images, D) whole-image vectors in store order (an array or the
            store's WholeImageRows, streamed), or None.
    """
    from claid.evaluation.protocols import evaluate
    from claid.evaluation.scores_out import scores_to_metrics

    repeats = shuffle_repeats_of(rankings, settings.shuffle_draws)
    scores = {"shuffled": shuffled_scores(rankings, bench, settings.seed, repeats)}
    notes: dict = {}
    if settings.global_baseline and whole is not None:
        ranked, notes = global_rankings(settings, bench, query_vectors, whole, store)
        if ranked is not None:
            scores["global_descriptor"] = retrieval_only(scores_to_metrics(evaluate(ranked, bench)))
    return BaselineOutcome(scores, notes, repeats)


def global_rankings(settings: BaselineSettings, bench, query_vectors: np.ndarray, whole,
                    store) -> tuple[list[Ranking] | None, dict]:
    """Rankings of the whole-image vectors (one row per image) with the run's index
    preset and k, and notes on how they were searched (the index factory, k, whether
    exact); (None, ``{"skipped": why}``) when the preset's database whitening asks for
    more dimensions than the images can give."""
    from claid.config.build import build
    from claid.index.index_stage import search_stage
    from claid.index.search_table import whole_image_table

    node = settings.index
    width = node.get("whitening_dim")
    if node.get("whitening") == "database" and width is not None and len(whole) <= int(width):
        why = f"index.whitening_dim={width} needs more than {len(whole)} whole-image vectors to fit"
        log.warning("global baseline skipped: %s", why)
        return None, {"skipped": why}
    table = whole_image_table(store, whole)
    index = build(node)(table, seed=int(settings.seed))
    k = settings.k
    notes = {"factory": index.meta["factory"], "k": k, "exact": index.is_exact}
    return search_stage(index, table, query_vectors, bench.queries, k, float(settings.memory_gb)), notes
