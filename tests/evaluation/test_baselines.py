"""The chance level reported beside every run: shuffled rankings, averaged."""

from itertools import combinations

import numpy as np
import pytest

from claid.evaluation.baselines import SHUFFLE_BUDGET, shuffle_repeats, shuffled_scores
from claid.index.index_stage import SearchSettings
from claid.structures import Benchmark, Query, Ranking


def _perfect(n_database: int, positives: list[str]) -> tuple[Benchmark, list[Ranking]]:
    database = positives + [f"neg{i}" for i in range(n_database - len(positives))]
    bench = Benchmark(
        name="toy", root="", database=database,
        queries=[Query(image="q.jpg", positives=positives, qid="q")],
        protocol={"family": "lab", "metrics": ["mAP-50", "mAP-100", "mAP-all"], "ap": "lab"},
    )
    scores = np.linspace(1, 0.1, n_database).astype(np.float32)
    ranking = Ranking("q", list(database), scores, np.zeros((n_database, 4), np.float32))
    return bench, [ranking]


def _exact_expected_ap_all(n: int, r: int) -> float:
    """Mean non-interpolated AP over every placement of r relevant items in n ranks."""
    aps = []
    for ranks in combinations(range(1, n + 1), r):
        aps.append(np.mean([(i + 1) / rank for i, rank in enumerate(ranks)]))
    return float(np.mean(aps))


def test_average_of_shuffles_is_the_expected_chance_ap():
    bench, rankings = _perfect(10, ["a", "b"])
    chance = shuffled_scores(rankings, bench, seed=0, repeats=3000)
    assert chance["lab/mAP-all"] == pytest.approx(_exact_expected_ap_all(10, 2), abs=0.015)
    assert chance["lab/mAP-all"] < 0.6  # the unshuffled ranking scores 1.0


def test_seeded_and_repeats_checked():
    bench, rankings = _perfect(12, ["a", "b", "c"])
    assert shuffled_scores(rankings, bench, 3, 20) == shuffled_scores(rankings, bench, 3, 20)
    with pytest.raises(ValueError, match="repeats"):
        shuffled_scores(rankings, bench, 0, 0)


def test_repeats_shrink_as_queries_grow_and_as_rankings_lengthen():
    assert shuffle_repeats(20, 2000) == 100 and shuffle_repeats(1250, 2000) == 2
    assert shuffle_repeats(5000, 2000) == 1 and shuffle_repeats(0, 2000) == 2000
    # one query over a 1M-image database: the budget, not 2000 full shuffles
    assert shuffle_repeats(1, 2000, ranked_entries=1_000_000) == SHUFFLE_BUDGET // 1_000_000
    assert shuffle_repeats(1250, 2000, ranked_entries=1250 * 27_000) == 1
    with pytest.raises(ValueError, match="shuffle_draws"):
        shuffle_repeats(20, 0)


@pytest.mark.parametrize("key, value", [("shuffle_draws", 0), ("save_top", -1), ("save_top", None),
                                        ("shuffle_draws", 2.5), ("whole_image_region", "yes"),
                                        ("memory_gb", 0), ("memory_gb", "1G"),
                                        ("max_memory_gb", -1), ("regions_per_image", 0)])
def test_search_settings_are_checked_before_any_work(key, value):
    search = {"shuffle_draws": 2000, "save_top": 100, "whole_image_region": False,
              "global_baseline": True, "memory_gb": 1.0, "max_memory_gb": None, "regions_per_image": 30}
    SearchSettings.from_node(search)
    search[key] = value
    with pytest.raises(ValueError, match=f"^search.{key} must be"):
        SearchSettings.from_node(search)


def test_a_misspelled_search_key_is_an_error():
    with pytest.raises(ValueError, match=r"^search.shufle_draws is not a search setting; known: "):
        SearchSettings.from_node({"shufle_draws": 10})
