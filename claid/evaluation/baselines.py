"""The same queries scored two other ways, beside every run's metrics: the chance
level (the run's own rankings shuffled) and one global descriptor per image."""

from __future__ import annotations

import logging
import math

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
    from claid.evaluation.report import scores_to_metrics

    if repeats < 1:
        raise ValueError(f"shuffle repeats must be >= 1, got {repeats}")
    rng = np.random.default_rng(seed)
    draws = [
        retrieval_only(scores_to_metrics(evaluate(shuffled(rankings, rng), bench)))
        for _ in range(repeats)
    ]
    return {key: float(np.mean([d[key] for d in draws])) for key in draws[0]}


def baseline_scores(cfg, bench, rankings: list[Ranking], query_vectors: np.ndarray, whole,
                    store, notes: dict | None = None) -> dict[str, dict[str, float]]:
    """The chance level and, when whole-image vectors exist and
    ``search.global_baseline`` is on, the global-descriptor baseline.

    The global baseline is searched like the regions: the same index preset
    (``cfg.index``) and the same ``index.k``, so it is exact only when the run's
    index is, and with k set its rankings hold at most k images.

    Args:
        rankings: the run's rankings of ``bench.queries``.
        query_vectors: (n_queries, D) float32, in ``bench.queries`` order.
        whole: (n_images, D) whole-image vectors in store order (an array or the
            store's WholeImageRows, streamed), or None.
        notes: filled with how the global baseline was searched (index factory, k),
            or why it was skipped (a whitening wider than the images can fit).
    Returns:
        {"shuffled": metrics, "global_descriptor": metrics}, retrieval metrics only.
    """
    from claid.evaluation.protocols import evaluate
    from claid.evaluation.report import scores_to_metrics

    repeats = shuffle_repeats_of(rankings, cfg.search.shuffle_draws)
    baselines = {"shuffled": shuffled_scores(rankings, bench, cfg.seed, repeats)}
    notes = {} if notes is None else notes
    if cfg.search.global_baseline and whole is not None:
        ranked = global_rankings(cfg, bench, query_vectors, whole, store, notes)
        if ranked is not None:
            baselines["global_descriptor"] = retrieval_only(scores_to_metrics(evaluate(ranked, bench)))
    return baselines


def global_rankings(cfg, bench, query_vectors: np.ndarray, whole, store,
                    notes: dict) -> list[Ranking] | None:
    """Rankings of the whole-image vectors (one row per image) with the run's index
    preset and k; None (and ``notes["skipped"]``) when the preset's database
    whitening asks for more dimensions than the images can give."""
    from claid.artifacts import plain
    from claid.config.build import build
    from claid.index.index_stage import SEARCH_KEYS, search_stage
    from claid.index.search_table import whole_image_table

    node = {key: v for key, v in plain(cfg.index).items() if key not in SEARCH_KEYS}
    width = node.get("whitening_dim")
    if node.get("whitening") == "database" and width is not None and len(whole) <= int(width):
        notes["skipped"] = (f"index.whitening_dim={width} needs more than {len(whole)} "
                            "whole-image vectors to fit")
        log.warning("global baseline skipped: %s", notes["skipped"])
        return None
    table = whole_image_table(store, whole)
    index = build(node)(table, seed=int(cfg.seed))
    k = cfg.index.get("k")
    notes.update(factory=index.meta["factory"], k=k, exact=index.is_exact)
    return search_stage(index, table, query_vectors, bench.queries, k,
                        float(cfg.search.get("memory_gb", 1.0)))
