"""Revisited Easy / Medium / Hard on a hand-computed case, through evaluate()."""

import numpy as np
import pytest

from claid.evaluation import evaluate, revisited_ground_truth
from claid.structures import Benchmark, Query, Ranking


def _query(qid, easy, hard, junk):
    return Query(image=f"{qid}.jpg", qid=qid, extra={"easy": easy, "hard": hard, "junk": junk})


def _ranking(qid, images):
    n = len(images)
    return Ranking(qid, list(images), np.linspace(1, 0.1, n).astype(np.float32), np.zeros((n, 4)))


def test_settings_move_easy_and_hard_between_positives_and_junk():
    q = _query("q", ["e1"], ["h1"], ["j1"])
    assert revisited_ground_truth(q, "easy") == ({"e1"}, {"j1", "h1"})
    assert revisited_ground_truth(q, "medium") == ({"e1", "h1"}, {"j1"})
    assert revisited_ground_truth(q, "hard") == ({"h1"}, {"j1", "e1"})
    with pytest.raises(ValueError, match="setting"):
        revisited_ground_truth(q, "extreme")
    with pytest.raises(ValueError, match="extra"):
        revisited_ground_truth(Query(image="x.jpg", qid="x"), "easy")
    with pytest.raises(ValueError, match="more than one"):
        revisited_ground_truth(_query("b", ["a"], ["a"], []), "easy")


def test_easy_medium_hard_map_and_mp_by_hand():
    database = ["n1", "e1", "j1", "h1", "e2", "n2"]
    queries = [_query("q1", ["e1"], ["h1"], ["j1"]), _query("q2", ["e2"], [], [])]
    bench = Benchmark(
        name="tiny-revisited",
        root="/nowhere",
        database=database,
        queries=queries,
        protocol={"family": "revisited"},
    )
    rankings = [_ranking("q1", ["n1", "e1", "j1", "h1"]), _ranking("q2", ["e2", "n1"])]
    (scores,) = evaluate(rankings, bench)
    v = scores.values
    # q1 easy: [n1, e1] -> 0,1 -> (0 + 1/2)/2 = 0.25; q2 easy: [e2, n1] -> 1.0
    assert v["easy/mAP"] == pytest.approx((0.25 + 1.0) / 2)
    # q1 medium: [n1, e1, h1] -> (0+1/2)/2/2 + (1/2+2/3)/2/2 = 0.41667; q2 medium: 1.0
    assert v["medium/mAP"] == pytest.approx((0.125 + 7 / 24 + 1.0) / 2)
    # hard: only q1 has hard positives -> [n1, h1] -> 0.25; q2 is left out
    assert v["hard/mAP"] == pytest.approx(0.25)
    assert scores.settings["n_queries_scored"] == {"easy": 2, "medium": 2, "hard": 1}
    assert scores.settings["queries_skipped_no_positive"]["hard"] == {"count": 1, "qids": ["q2"]}
    # revisitop mP@k: q1 medium positives at ranks 2, 3 -> mP-1 = 0, mP-5 = 2/3; q2: 1, 1
    assert v["medium/mP-1"] == pytest.approx(0.5)
    assert v["medium/mP-5"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert v["easy/mP-5"] == pytest.approx((0.5 + 1.0) / 2)
    assert scores.protocol == "revisited"
