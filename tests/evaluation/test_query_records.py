"""queries.json: per-query figures are the protocol's own, marks follow its ground truth,
and the mean of the per-query values is the headline metric."""

import numpy as np
import pytest

from claid.evaluation import evaluate
from claid.evaluation.query_records import MARKS, SCHEMA_VERSION, query_records
from claid.structures import Benchmark, Query, Ranking


def _ranking(qid, images, scores=None):
    n = len(images)
    scores = np.linspace(1, 0.1, n) if scores is None else scores
    return Ranking(qid, list(images), np.asarray(scores, np.float32), np.arange(4 * n, dtype=np.float32).reshape(n, 4))


def _bench(protocol, queries, database):
    return Benchmark(name="tiny", root="/nowhere", database=list(database), queries=queries, protocol=protocol)


def _marks(entry, grading="default"):
    return {r["image"]: r["marks"][grading] for r in entry["results"]}


def test_lab_records_hold_the_protocols_test_vector_and_every_mark():
    queries = [
        Query(image="q1.jpg", qid="q1", positives=["a", "b", "c"], junk=["j"]),
        Query(image="q2.jpg", qid="q2", positives=["x"]),
    ]
    bench = _bench({"family": "lab", "metrics": ["mAP-4", "mAP-all"]}, queries, ["a", "b", "c", "j", "x", "y"])
    # q1 after the protocol drops the query image q2.jpg and the junk j: a x y b c -> 1,0,0,1,1
    rankings = [_ranking("q1", ["a", "x", "q2.jpg", "j", "y", "b", "c"]), _ranking("q2", ["y", "x"])]
    records = query_records(bench, rankings, top=5)

    assert records["schema_version"] == SCHEMA_VERSION and records["family"] == "lab"
    assert records["metrics"] == ["mAP-4", "mAP-all"] and records["headline"] == "mAP-all"
    assert records["gradings"] == ["default"] and set(records["marks"]) == set(MARKS)
    q1, q2 = records["queries"]
    # PROTOCOLS.md's test vector: lab mAP-k 0.3333 (k=4, |R|=3), lab mAP-all 0.7
    assert q1["values"]["mAP-4"] == pytest.approx(1 / 3) and q1["values"]["mAP-all"] == pytest.approx(0.7)
    # q2: its one positive at rank 2; lab mAP-k looks at the first min(k, |R|) = 1 rank only
    assert q2["values"] == {"mAP-4": 0.0, "mAP-all": pytest.approx(0.5)}
    (scores,) = evaluate(rankings, bench, per_query=True)
    for entry in (q1, q2):
        assert entry["values"] == scores.settings["per_query"][entry["qid"]]
    for key in records["metrics"]:  # the mean of the per-query values is the run's metric
        assert np.mean([q["values"][key] for q in records["queries"]]) == pytest.approx(scores.values[key])
        assert records["means"][key] == scores.values[key]
    assert _marks(q1) == {"a": "positive", "x": "negative", "q2.jpg": "removed", "j": "junk", "y": "negative"}
    assert len(q1["results"]) == 5 and q1["n_ranked"] == 7  # saved: the top 5; figures: the full ranking
    assert q1["n_relevant"] == {"default": 3} and q1["image"] == "q1.jpg" and q1["box"] is None
    assert q1["results"][1] == {"image": "x", "score": pytest.approx(0.85), "box": [4.0, 5.0, 6.0, 7.0],
                                "marks": {"default": "negative"}}


def test_revisited_marks_junk_per_grading_and_skips_a_grading_without_positives():
    queries = [
        Query(image="qa.jpg", qid="qa", extra={"easy": ["a"], "hard": ["b"], "junk": ["c"]}),
        Query(image="qb.jpg", qid="qb", extra={"easy": ["x"], "hard": [], "junk": []}),
    ]
    bench = _bench({"family": "revisited"}, queries, ["a", "b", "c", "x"])
    rankings = [_ranking("qa", ["c", "b", "x", "a"]), _ranking("qb", ["a", "x"])]
    records = query_records(bench, rankings, top=100)
    qa, qb = records["queries"]

    assert records["gradings"] == ["easy", "medium", "hard"] and records["headline"] == "medium/mAP"
    # Easy: hard counts as junk; Medium: easy + hard positive; Hard: easy counts as junk
    assert _marks(qa, "easy") == {"c": "junk", "b": "junk", "x": "negative", "a": "positive"}
    assert _marks(qa, "medium") == {"c": "junk", "b": "positive", "x": "negative", "a": "positive"}
    assert _marks(qa, "hard") == {"c": "junk", "b": "positive", "x": "negative", "a": "junk"}
    # trapezoid AP by hand: medium b x a -> 0.5 + (1/2 + 2/3) / 4; easy x a -> 0.25; hard b x -> 1
    assert qa["values"]["medium/mAP"] == pytest.approx(0.5 + (0.5 + 2 / 3) / 4)
    assert qa["values"]["easy/mAP"] == pytest.approx(0.25) and qa["values"]["hard/mAP"] == pytest.approx(1.0)
    assert qa["n_relevant"] == {"easy": 1, "medium": 2, "hard": 1}
    # qb has no hard positive: null there, left out of the Hard mean
    assert qb["values"]["hard/mAP"] is None and qb["values"]["hard/mP-1"] is None
    (scores,) = evaluate(rankings, bench)
    for key in records["metrics"]:
        scored = [q["values"][key] for q in records["queries"] if q["values"][key] is not None]
        assert np.mean(scored) == pytest.approx(scores.values[key]), key
    assert records["means"]["hard/mAP"] == pytest.approx(1.0)


def test_results_are_saved_in_the_order_the_protocol_scored_and_junk_kept_is_negative():
    queries = [Query(image="q.jpg", qid="q", positives=["b"], junk=["a"])]
    # lab ties: the image later in the database comes first among equal scores
    bench = _bench({"family": "lab", "junk": False}, queries, ["a", "b", "c"])
    records = query_records(bench, [_ranking("q", ["a", "b", "c"], [0.9, 0.9, 0.5])], top=3)
    (entry,) = records["queries"]
    assert [r["image"] for r in entry["results"]] == ["b", "a", "c"]
    assert _marks(entry) == {"b": "positive", "a": "negative", "c": "negative"}  # junk: false keeps it
    assert entry["values"]["mAP-all"] == pytest.approx(1.0)


def test_queries_without_any_positive_are_recorded_with_null_values():
    bench = _bench({"family": "lab"}, [Query(image="q.jpg", qid="q", positives=[])], ["a"])
    records = query_records(bench, [_ranking("q", ["a"])], top=10)
    assert records["means"] == {} and records["queries"][0]["values"] == dict.fromkeys(records["metrics"])
    assert records["queries"][0]["results"][0]["marks"] == {"default": "negative"}
    assert "mAP-all" in records["definitions"]
