"""The lab protocol's tie order and |R| follow the lab's code by default; the other
convention of each is a named option, recorded with the result."""

import numpy as np
import pytest

from claid.evaluation import evaluate, resolve_protocol
from claid.evaluation.conventions import tie_ordered
from claid.structures import Benchmark, Query, Ranking


def _bench(protocol, queries, database):
    return Benchmark(name="tiny", root="/nowhere", database=list(database), queries=queries,
                     protocol=protocol)  # fmt: skip


def _ranking(qid, images, scores):
    n = len(images)
    boxes = np.arange(4 * n, dtype=np.float32).reshape(n, 4)  # row i tells where image i's box went
    return Ranking(qid, list(images), np.asarray(scores, np.float32), boxes)


def test_two_image_tie_of_the_issue():
    # regions scored [0.5, 0.5] on A and B; B is the only positive
    bench = _bench({"family": "lab"}, [Query(image=None, qid="q", positives=["B"])], ["A", "B"])
    ranking = _ranking("q", ["A", "B"], [0.5, 0.5])  # claid's order: lowest region index first
    (lab,) = evaluate([ranking], bench, ks=(1,))
    assert lab.values["mAP-1"] == 1.0  # the lab ranks B (later in the database) first
    (claid,) = evaluate([ranking], _bench({"family": "lab", "ties": "as_ranked"}, bench.queries,
                                          bench.database), ks=(1,))  # fmt: skip
    assert claid.values["mAP-1"] == 0.0
    (earlier,) = evaluate([ranking], _bench({"family": "lab", "ties": "earlier_first"}, bench.queries,
                                            bench.database), ks=(1,))  # fmt: skip
    assert earlier.values["mAP-1"] == 0.0
    assert lab.settings["ties"]["rule"] == "later_first" and lab.settings["ties"]["n_rankings_reordered"] == 1
    assert claid.settings["ties"]["rule"] == "as_ranked"


def test_only_runs_of_equal_scores_move_and_boxes_follow_their_images():
    database = ["a", "b", "c", "d", "e", "f"]
    index = {image: i for i, image in enumerate(database)}
    ranking = _ranking("q", ["c", "a", "e", "b", "f", "d"], [0.9, 0.7, 0.7, 0.7, 0.4, 0.4])
    later = tie_ordered(ranking, "later_first", index)
    assert later.images == ["c", "e", "b", "a", "f", "d"]
    np.testing.assert_array_equal(later.scores, ranking.scores)
    for image, box in zip(later.images, later.boxes):
        np.testing.assert_array_equal(box, ranking.boxes[ranking.images.index(image)])
    earlier = tie_ordered(ranking, "earlier_first", index)
    assert earlier.images == ["c", "a", "b", "e", "d", "f"]
    assert tie_ordered(ranking, "as_ranked", index) is ranking


def _sorted_whole_ranking(ranking, ties, index):
    """The definition, on every entry: a stable sort by (run of equal scores, database
    position, reversed for later_first), images missing from the database after."""
    scores = np.asarray(ranking.scores)
    run = np.cumsum(np.r_[True, scores[1:] != scores[:-1]])
    position = np.array([index.get(im, len(index) + i) for i, im in enumerate(ranking.images)])
    order = np.lexsort((-position if ties == "later_first" else position, run))
    return [ranking.images[i] for i in order], ranking.boxes[order]


@pytest.mark.parametrize("ties", ["later_first", "earlier_first"])
def test_long_rankings_with_many_runs_match_the_definition(ties):
    rng = np.random.default_rng(7)
    database = [f"im{i}" for i in range(400)]
    index = {image: i for i, image in enumerate(database[:380])}  # 20 images not in the database
    for _ in range(20):
        images = [database[i] for i in rng.permutation(400)]
        scores = np.sort(rng.integers(0, 60, 400))[::-1] / 60  # runs of 1 to ~15 equal scores
        ranking = _ranking("q", images, scores)
        got = tie_ordered(ranking, ties, index)
        want_images, want_boxes = _sorted_whole_ranking(ranking, ties, index)
        assert got.images == want_images
        np.testing.assert_array_equal(got.boxes, want_boxes)
        np.testing.assert_array_equal(got.scores, ranking.scores)
        assert ranking.images == images  # the input is not modified


def test_a_ranking_not_sorted_by_score_is_not_resorted():
    index = {"a": 0, "b": 1, "c": 2}
    ranking = _ranking("q", ["a", "c", "b"], [0.2, 0.9, 0.2])  # no two equal scores are adjacent
    assert tie_ordered(ranking, "later_first", index) is ranking


def test_ties_need_a_database_order():
    with pytest.raises(ValueError, match="ties"):
        tie_ordered(_ranking("q", ["a", "b"], [0.5, 0.5]), "later_first", {})


def test_lab_defaults_and_other_families_keep_their_conventions():
    lab = resolve_protocol({"family": "lab"})
    assert (lab.ties, lab.n_relevant) == ("later_first", "ground_truth")
    for family in ("trapezoid", "revisited", "gldv2"):
        spec = resolve_protocol({"family": family})
        assert (spec.ties, spec.n_relevant) == ("as_ranked", "reachable"), family
    with pytest.raises(ValueError, match="ties"):
        resolve_protocol({"family": "lab", "ties": "random"})
    with pytest.raises(ValueError, match="n_relevant"):
        resolve_protocol({"family": "lab", "n_relevant": "all"})
    with pytest.raises(ValueError, match="did you mean 'ties'"):
        resolve_protocol({"family": "lab", "tie": "later_first"})


def _removed_positive_bench(protocol):
    # the ground truth of q1 names q2.jpg, a query image the protocol removes from the database
    queries = [
        Query(image="q1.jpg", qid="q1", positives=["a", "b", "q2.jpg", "z"]),  # z: not in the database
        Query(image="q2.jpg", qid="q2", positives=["q1.jpg"]),  # nothing reachable
    ]
    return _bench(protocol, queries, ["a", "b", "c", "d"])


def test_n_relevant_ground_truth_divides_by_the_list_length():
    rankings = [_ranking("q1", ["a", "c", "b"], [0.9, 0.8, 0.7]), _ranking("q2", ["a"], [0.3])]
    (lab,) = evaluate(rankings, _removed_positive_bench({"family": "lab"}), ks=(2,), per_query=True)
    # q1: hits at ranks 1 and 3; |R| = 4 listed images -> mAP-all (1 + 2/3) / 4, mAP-2 cut at
    # n = min(2, 4) = 2 -> 1 / 2; q2 names one image it cannot retrieve: scored, AP 0
    assert lab.settings["per_query"]["q1"]["mAP-all"] == pytest.approx((1 + 2 / 3) / 4)
    assert lab.settings["per_query"]["q1"]["mAP-2"] == pytest.approx(1 / 2)
    assert lab.settings["per_query"]["q2"]["mAP-all"] == 0.0
    assert lab.values["mAP-all"] == pytest.approx((1 + 2 / 3) / 8)
    assert lab.settings["n_queries_scored"] == 2
    assert lab.settings["n_relevant"]["rule"] == "ground_truth"

    (reachable,) = evaluate(rankings, _removed_positive_bench({"family": "lab", "n_relevant": "reachable"}),
                            ks=(2,), per_query=True)  # fmt: skip
    # |R| = 2 (a, b): mAP-all (1 + 2/3) / 2, mAP-2 = 1 / 2; q2 has no reachable positive: left out
    assert reachable.settings["per_query"]["q1"]["mAP-all"] == pytest.approx((1 + 2 / 3) / 2)
    assert reachable.values["mAP-all"] == pytest.approx((1 + 2 / 3) / 2)
    assert reachable.settings["n_queries_scored"] == 1
    assert reachable.settings["queries_skipped_no_positive"]["all"]["qids"] == ["q2"]
    assert reachable.settings["n_relevant"]["rule"] == "reachable"


def test_an_empty_ground_truth_list_is_still_left_out():
    queries = [Query(image=None, qid="q1", positives=["a"]), Query(image=None, qid="q2", positives=[])]
    (lab,) = evaluate([_ranking("q1", ["a"], [1.0]), _ranking("q2", ["a"], [1.0])],
                      _bench({"family": "lab"}, queries, ["a"]))  # fmt: skip
    assert lab.settings["n_queries_scored"] == 1 and lab.values["mAP-all"] == 1.0


def test_run_config_options_reach_the_protocol(compose_cfg):
    from claid.evaluation.conventions import with_conventions

    bench = _bench({"family": "lab", "query": "crop"}, [Query(image=None, qid="q", positives=["B"])], ["A", "B"])
    cfg = compose_cfg()
    assert with_conventions(bench, cfg.evaluation) is bench  # null: the family's defaults
    cfg = compose_cfg("evaluation.ties=as_ranked", "evaluation.n_relevant=reachable")
    chosen = with_conventions(bench, cfg.evaluation)
    assert chosen.protocol == {"family": "lab", "query": "crop", "ties": "as_ranked", "n_relevant": "reachable"}
    (scores,) = evaluate([_ranking("q", ["A", "B"], [0.5, 0.5])], chosen, ks=(1,))
    assert scores.values["mAP-1"] == 0.0 and scores.settings["protocol"]["ties"] == "as_ranked"
    with pytest.raises(ValueError, match="evaluation.ties"):
        with_conventions(bench, {"ties": "last"})
    with pytest.raises(ValueError, match="evaluation.tie "):
        with_conventions(bench, {"tie": "later_first"})


def test_pooled_ties_by_hand_and_against_scikit_learn():
    from claid.evaluation.ap import gldv2_ap_at_k, lab_ap_all

    # ranks 1..5: relevance 1,0,1,1,0; scores 0.9, 0.5, 0.5, 0.5, 0.1: the run of ranks
    # 2-4 ends at rank 4 with 3 hits, so its two hits get 3/4 each
    relevance = np.array([1, 0, 1, 1, 0], bool)
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    assert gldv2_ap_at_k(relevance, 3, 5, scores) == pytest.approx((1 + 0.75 + 0.75) / 3)
    assert gldv2_ap_at_k(relevance, 3, 5) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    # a run cut by k ends at k: ranks 2-3 kept, 1 hit of 2 hits in 3 ranks
    assert gldv2_ap_at_k(relevance, 3, 3, scores) == pytest.approx((1 + 2 / 3) / 3)
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(1, 60))
        scores = np.sort(rng.integers(0, 8, n))[::-1] / 8.0
        relevance = rng.random(n) < 0.3
        if not relevance.any():
            continue
        hits, n_relevant = int(relevance.sum()), int(relevance.sum() + rng.integers(0, 4))
        want = sklearn.average_precision_score(relevance, scores) * hits / n_relevant
        assert lab_ap_all(relevance, n_relevant, scores) == pytest.approx(want, abs=1e-12)
        shuffled = np.concatenate([rng.permutation(relevance[scores == s]) for s in np.unique(scores)[::-1]])
        assert lab_ap_all(shuffled, n_relevant, scores) == pytest.approx(want, abs=1e-12)
        distinct = np.arange(n, 0, -1) / n  # no ties: the plain definition
        assert lab_ap_all(relevance, n_relevant, distinct) == pytest.approx(lab_ap_all(relevance, n_relevant))


def test_pooled_is_refused_where_a_metric_has_no_pooled_form():
    bench = _bench({"family": "trapezoid", "ties": "pooled"}, [Query(image=None, qid="q", positives=["B"])],
                   ["A", "B"])  # fmt: skip
    with pytest.raises(ValueError, match="pooled applies to precision-at-hit metrics only"):
        evaluate([_ranking("q", ["A", "B"], [0.5, 0.5])], bench)
    pooled = _bench({"family": "lab", "ties": "pooled"}, bench.queries, bench.database)
    (lab,) = evaluate([_ranking("q", ["A", "B"], [0.5, 0.5])], pooled, ks=(1,))
    assert lab.values["mAP-all"] == 0.5  # either order of the tie: 1/2
    assert lab.values["mAP-1"] == 0.0  # the lab cuts at min(k, |R|) = 1: the cut run holds A only
    assert lab.settings["ties"]["rule"] == "pooled"
