"""evaluate(): the protocol dict decides variants, junk, query removal; bad
pairings of rankings and benchmark are errors."""

import numpy as np
import pytest

from claid.evaluation import evaluate, resolve_protocol, scores_to_metrics
from claid.structures import Benchmark, Query, Ranking

DATABASE = ["a", "b", "c", "x", "y", "z"]


def _ranking(qid, images, boxes=None):
    n = len(images)
    boxes = np.zeros((n, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32)
    return Ranking(qid, list(images), np.linspace(1, 0.1, n).astype(np.float32), boxes)


def _bench(protocol, queries=None, database=DATABASE, gt_boxes=None):
    queries = queries or [Query(image="q1.jpg", qid="q1", positives=["a", "b", "c"])]
    return Benchmark(
        name="tiny",
        root="/nowhere",
        database=list(database),
        queries=queries,
        gt_boxes=gt_boxes or {},
        protocol=protocol,
    )


def test_lab_protocol_reproduces_the_test_vector_and_drops_query_images():
    queries = [
        Query(image="q1.jpg", qid="q1", positives=["a", "b", "c"]),
        Query(image="q2.jpg", qid="q2", positives=["x"]),
    ]
    bench = _bench({"family": "lab", "query": "crop"}, queries)
    # q1's list after removing the query images: a x y b c -> 1,0,0,1,1
    rankings = [
        _ranking("q1", ["q1.jpg", "a", "x", "q2.jpg", "y", "b", "c"]),
        _ranking("q2", ["x"]),
    ]
    (scores,) = evaluate(rankings, bench, ks=(4,), per_query=True)
    assert scores.protocol == "lab"
    assert scores.settings["per_query"]["q1"]["mAP-4"] == pytest.approx(1 / 3)
    assert scores.settings["per_query"]["q1"]["mAP-all"] == pytest.approx(0.7)
    assert scores.values["mAP-4"] == pytest.approx((1 / 3 + 1) / 2)
    assert scores.values["mAP-all"] == pytest.approx((0.7 + 1) / 2)
    assert set(scores.values) == {"mAP-4", "mAP-all"}
    assert scores.settings["protocol"]["query"] == "crop"  # recorded, not interpreted
    assert "mAP-4" in scores.settings["metrics"]


def test_default_lab_metrics_are_map_50_100_all():
    (scores,) = evaluate([_ranking("q1", ["a"])], _bench({"family": "lab"}))
    assert set(scores.values) == {"mAP-50", "mAP-100", "mAP-all"}
    # one of three positives at rank 1: n = min(50, 3) = 3 -> 1/3
    assert scores.values["mAP-50"] == pytest.approx(1 / 3)


def test_gldv2_reads_k_from_the_protocol_and_family_override_uses_ks():
    ranking = [_ranking("q1", ["a", "x", "y", "b", "c"])]
    (gld,) = evaluate(ranking, _bench({"family": "gldv2", "k": [4]}))
    assert gld.values == {"mAP-at-4": pytest.approx(0.5)}
    (override,) = evaluate(ranking, _bench({"family": "lab"}), protocol="gldv2", ks=(4,))
    assert override.protocol == "gldv2"
    assert override.settings["family_override"] is True
    assert override.values == {"mAP-at-4": pytest.approx(0.5)}


def test_trapezoid_removes_junk_and_keeps_a_query_listed_as_positive():
    queries = [
        # Oxford-like: the query image is itself among the good images
        Query(image="a", qid="ox", positives=["a", "b"], junk=["y"]),
        # Holidays-like: the query image is in the database but not a positive
        Query(image="x", qid="hol", positives=["c"]),
    ]
    bench = _bench({"family": "trapezoid"}, queries)
    rankings = [_ranking("ox", ["a", "y", "z", "b"]), _ranking("hol", ["x", "c"])]
    (scores,) = evaluate(rankings, bench, per_query=True)
    per_query = scores.settings["per_query"]
    # ox: junk y out -> a z b -> 1,0,1 with |R| = 2: 0.5 + (1/2 + 2/3)/4
    assert per_query["ox"]["mAP"] == pytest.approx(0.5 + 7 / 24)
    # hol: its own image leaves its ranking -> c at rank 1
    assert per_query["hol"]["mAP"] == pytest.approx(1.0)
    assert scores.settings["remove_queries_from_db"] is False
    assert scores.settings["n_junk_images_removed"] == 1


def test_junk_false_keeps_junk_as_negatives():
    queries = [Query(image=None, text="t", qid="t1", positives=["a", "b"], junk=["y"])]
    rankings = [_ranking("t1", ["a", "y", "b"])]
    (kept,) = evaluate(rankings, _bench({"family": "lab", "junk": False}, queries))
    (removed,) = evaluate(rankings, _bench({"family": "lab"}, queries))
    assert kept.values["mAP-all"] == pytest.approx((1 + 2 / 3) / 2)
    assert removed.values["mAP-all"] == pytest.approx(1.0)


def test_unranked_positives_are_misses_and_queries_without_positives_are_skipped():
    queries = [
        Query(image="q1.jpg", qid="q1", positives=["a", "b", "c"]),
        Query(image="q2.jpg", qid="q2", positives=[]),
    ]
    (scores,) = evaluate(
        [_ranking("q1", []), _ranking("q2", ["a"])], _bench({"family": "lab"}, queries)
    )
    assert scores.values["mAP-all"] == 0.0
    assert scores.settings["n_queries_scored"] == 1
    assert scores.settings["queries_skipped_no_positive"]["all"]["qids"] == ["q2"]


def test_positives_that_left_the_database_are_counted_not_scored():
    # q2.jpg is both a query and a positive of q1: with queries removed it can't be found
    queries = [
        Query(image="q1.jpg", qid="q1", positives=["a", "q2.jpg"]),
        Query(image="q2.jpg", qid="q2", positives=["b"]),
    ]
    rankings = [_ranking("q1", ["a"]), _ranking("q2", ["b"])]
    (scores,) = evaluate(rankings, _bench({"family": "lab", "n_relevant": "reachable"}, queries))
    assert scores.values["mAP-all"] == pytest.approx(1.0)
    assert scores.settings["n_positives_not_in_database"] == 1
    # the lab's default divides by the ground-truth list: q1 found 1 of its 2 -> 0.5
    (scores,) = evaluate(rankings, _bench({"family": "lab"}, queries))
    assert scores.values["mAP-all"] == pytest.approx((0.5 + 1.0) / 2)
    assert scores.settings["n_positives_not_in_database"] == 1


def test_retrieval_localisation_scores_the_returned_boxes_of_true_positives():
    gt = {"a": np.array([[5, 5, 15, 15]], np.float32), "b": np.array([[0, 0, 8, 8]], np.float32)}
    boxes = [[0, 0, 10, 10], [0, 0, 4, 4], [0, 0, 8, 8]]  # a, x (not relevant), b
    bench = _bench({"family": "lab"}, gt_boxes=gt)
    scores = evaluate([_ranking("q1", ["a", "x", "b"], boxes)], bench)
    assert [s.protocol for s in scores] == ["lab", "loc-retrieval"]
    loc = scores[1]
    assert loc.values["mIoU-standard"] == pytest.approx((25 / 175 + 1.0) / 2)
    assert loc.values["mIoU-enclosing"] == pytest.approx((25 / 225 + 1.0) / 2)
    assert loc.settings["n_pairs"] == 2
    metrics = scores_to_metrics(scores)
    assert "loc-retrieval/mIoU-standard" in metrics and "lab/mAP-all" in metrics


def test_retrieval_localisation_prefers_the_querys_own_located_boxes():
    gt = {"a": np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)}
    # the query's instance is the second object of image a; the box found the first one
    query = Query(
        image="q1.jpg",
        qid="q1",
        positives=["a"],
        extra={"positive_boxes": {"a": np.array([[20, 20, 30, 30]], np.float32)}},
    )
    bench = _bench({"family": "lab"}, [query], gt_boxes=gt)
    scores = evaluate([_ranking("q1", ["a"], [[0, 0, 10, 10]])], bench)
    assert scores[1].values["mIoU-standard"] == 0.0
    assert scores[1].settings["gt_source"] == "query.extra['positive_boxes']"


@pytest.mark.parametrize(
    ("rankings", "message"),
    [
        ([_ranking("q1", ["a", "stranger"])], "not in benchmark"),
        ([], "no ranking"),
        ([_ranking("q1", ["a"]), _ranking("q1", ["b"])], "two rankings"),
        ([_ranking("q1", ["a"]), _ranking("zz", ["a"])], "unknown query"),
        ([_ranking("q1", ["a", "a"])], "more than once"),
        ([Ranking("q1", ["a", "b"], np.ones(2, np.float32), np.zeros((1, 4)))], "boxes"),
    ],
)
def test_rankings_that_do_not_fit_the_benchmark_are_errors(rankings, message):
    with pytest.raises(ValueError, match=message):
        evaluate(rankings, _bench({"family": "lab"}))


@pytest.mark.parametrize(
    ("protocol", "message"),
    [
        ({}, "names no 'family'"),
        ({"family": "detection"}, "no ranking to score"),
        ({"family": "none"}, "no ranking to score"),
        ({"family": "oxford"}, "unknown protocol family"),
        ({"family": "lab", "remove_queries_from_bd": True}, "did you mean"),
        ({"family": "lab", "junk": "yes"}, "true or false"),
        ({"family": "lab", "metrics": ["mAP@50"]}, "unknown metric"),
        ({"family": "lab", "remove_query_image": "sometimes"}, "remove_query_image"),
        ({"family": "gldv2", "k": [0]}, "positive integers"),
    ],
)
def test_bad_protocols_are_refused(protocol, message):
    with pytest.raises(ValueError, match=message):
        resolve_protocol(protocol)


def test_every_default_metric_key_is_a_valid_mlflow_name():
    from mlflow.utils.validation import _validate_metric_name

    for family in ("lab", "trapezoid", "revisited", "gldv2"):
        spec = resolve_protocol({"family": family, "k": [1000]})
        settings = ("easy/", "medium/", "hard/") if family == "revisited" else ("",)
        for prefix in settings:
            for name in spec.metrics:
                _validate_metric_name(f"{family}/{prefix}{name}")


def test_evaluate_matches_a_direct_relevance_list_on_random_cases():
    from claid.evaluation import lab_ap_all, relevance_vector, trapezoid_ap

    rng = np.random.default_rng(1)
    database = [f"d{i}" for i in range(40)]
    query_images = [f"d{i}" for i in range(5)]  # query images live in the database here
    queries, rankings = [], []
    for n, image in enumerate(query_images):
        shuffled = list(rng.permutation(database[5:]))
        positives, junk = shuffled[:6], shuffled[6:9]
        queries.append(Query(image=image, qid=f"q{n}", positives=positives, junk=junk))
        ranked = list(rng.permutation(database))[: rng.integers(5, 40)]
        rankings.append(_ranking(f"q{n}", ranked))
    bench = _bench({"family": "lab", "metrics": ["mAP-all", "mAP"]}, queries, database)
    (scores,) = evaluate(rankings, bench, per_query=True)
    for query, ranking in zip(queries, rankings):
        # the reference: drop every query image, then the junk, then score the list
        kept = [i for i in ranking.images if i not in query_images]
        relevance = relevance_vector(kept, query.positives, query.junk)
        got = scores.settings["per_query"][query.qid]
        assert got["mAP-all"] == pytest.approx(lab_ap_all(relevance, 6))
        assert got["mAP"] == pytest.approx(trapezoid_ap(relevance, 6))
