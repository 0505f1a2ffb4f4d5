"""AP variants on PROTOCOLS.md's test vector, hand-computed junk cases, and
against plain-loop references written from the definitions."""

import numpy as np
import pytest

from claid.evaluation.ap import (
    gldv2_ap_at_k,
    hits_normalised_ap_at_k,
    lab_ap_all,
    lab_ap_at_k,
    metric_function,
    precision_at_k,
    relevance_vector,
    revisitop_precision_at_k,
    trapezoid_ap,
)

VECTOR = np.array([1, 0, 0, 1, 1], dtype=bool)  # |R| = 3, k = 4


def test_protocols_test_vector_all_five_variants():
    assert lab_ap_at_k(VECTOR, 3, 4) == pytest.approx(0.3333, abs=5e-5)
    assert gldv2_ap_at_k(VECTOR, 3, 4) == pytest.approx(0.5000, abs=5e-5)
    assert hits_normalised_ap_at_k(VECTOR, 3, 4) == pytest.approx(0.7500, abs=5e-5)
    assert lab_ap_all(VECTOR, 3) == pytest.approx(0.7000, abs=5e-5)
    assert trapezoid_ap(VECTOR, 3) == pytest.approx(0.6556, abs=5e-5)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mAP-4", 1 / 3),
        ("mAP-at-4", 0.5),
        ("mAP-at-4-hits", 0.75),
        ("mAP-all", 0.7),
        ("mAP", 0.65556),
        ("P-4", 0.5),
        ("mP-4", 0.5),
    ],
)
def test_metric_names_parse_to_the_right_variant(name, expected):
    function, definition = metric_function(name)
    assert function(VECTOR, 3) == pytest.approx(expected, abs=5e-5)
    assert definition


@pytest.mark.parametrize("name", ["mAP@100", "map-50", "mAP-0", "mAP-at-", "AP"])
def test_unknown_metric_names_are_refused(name):
    with pytest.raises(ValueError):
        metric_function(name)


def test_junk_is_removed_before_scoring():
    # a(pos) j(junk) b(neg) c(pos): without j -> 1,0,1 with |R| = 2
    relevance = relevance_vector(["a", "j", "b", "c"], positives={"a", "c"}, junk={"j"})
    assert relevance.tolist() == [True, False, True]
    # trapezoid: (1+1)/2/2 + (1/2 + 2/3)/2/2 = 0.5 + 0.291667
    assert trapezoid_ap(relevance, 2) == pytest.approx(0.5 + 7 / 24)
    assert lab_ap_all(relevance, 2) == pytest.approx((1 + 2 / 3) / 2)
    # keeping j as a negative: 1,0,0,1 -> (1 + 2/4) / 2
    kept = relevance_vector(["a", "j", "b", "c"], positives={"a", "c"})
    assert lab_ap_all(kept, 2) == pytest.approx(0.75)


def test_positive_and_junk_at_once_is_an_error():
    with pytest.raises(ValueError, match="both positive and junk"):
        relevance_vector(["a"], positives={"a"}, junk={"a"})


def test_relevant_images_never_ranked_are_misses():
    found_two = np.array([1, 1], dtype=bool)
    assert lab_ap_all(found_two, 2) == pytest.approx(1.0)
    assert lab_ap_all(found_two, 4) == pytest.approx(0.5)
    assert trapezoid_ap(found_two, 4) == pytest.approx(0.5)
    empty = np.zeros(0, dtype=bool)
    for value in (lab_ap_all(empty, 3), trapezoid_ap(empty, 3), lab_ap_at_k(empty, 3, 50)):
        assert value == 0.0


def test_perfect_ranking_scores_one_everywhere():
    perfect = np.array([1, 1, 1, 0, 0], dtype=bool)
    for value in (
        lab_ap_at_k(perfect, 3, 2),
        lab_ap_at_k(perfect, 3, 10),
        gldv2_ap_at_k(perfect, 3, 10),
        hits_normalised_ap_at_k(perfect, 3, 10),
        lab_ap_all(perfect, 3),
        trapezoid_ap(perfect, 3),
    ):
        assert value == pytest.approx(1.0)


def test_lab_cut_ignores_ranks_after_min_k_r():
    # |R| = 2, k = 50: n = 2, the positive at rank 3 is not looked at
    relevance = np.array([1, 0, 1], dtype=bool)
    assert lab_ap_at_k(relevance, 2, 50) == pytest.approx(0.5)
    assert gldv2_ap_at_k(relevance, 2, 50) == pytest.approx((1 + 2 / 3) / 2)


def test_revisitop_precision_divides_by_the_last_positive_rank():
    one_at_top = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    assert revisitop_precision_at_k(one_at_top, 10) == pytest.approx(1.0)
    assert precision_at_k(one_at_top, 10) == pytest.approx(0.1)
    positives_2_and_3 = np.array([0, 1, 1, 0, 0], dtype=bool)
    assert revisitop_precision_at_k(positives_2_and_3, 1) == 0.0
    assert revisitop_precision_at_k(positives_2_and_3, 5) == pytest.approx(2 / 3)
    assert revisitop_precision_at_k(np.zeros(4, dtype=bool), 5) == 0.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: lab_ap_all(np.array([1, 1, 1], dtype=bool), 2),  # more hits than |R|
        lambda: lab_ap_all(np.array([0, 1], dtype=bool), 0),
        lambda: lab_ap_at_k(np.array([1], dtype=bool), 1, 0),
        lambda: trapezoid_ap(np.ones((2, 2), dtype=bool), 4),
        lambda: precision_at_k(np.array([1], dtype=bool), 0),
    ],
)
def test_bad_input_raises(call):
    with pytest.raises(ValueError):
        call()


# ---- plain-loop references, one per definition in PROTOCOLS.md sec. 1


def _reference_lab_k(rel, n_rel, k):
    n = min(k, n_rel)
    total, hits = 0.0, 0
    for i in range(min(n, len(rel))):
        if rel[i]:
            hits += 1
            total += hits / (i + 1)
    return total / n


def _reference_gldv2(rel, n_rel, k):
    total, hits = 0.0, 0
    for i in range(min(k, len(rel))):
        if rel[i]:
            hits += 1
            total += hits / (i + 1)
    return total / min(k, n_rel)


def _reference_trapezoid(rel, n_rel):
    # Oxford compute_ap.cpp: running recall/precision, trapezoid per step
    ap, old_recall, old_precision, hits = 0.0, 0.0, 1.0, 0
    for i, r in enumerate(rel):
        hits += int(r)
        recall, precision = hits / n_rel, hits / (i + 1)
        ap += (recall - old_recall) * (old_precision + precision) / 2
        old_recall, old_precision = recall, precision
    return ap


def test_vectorised_forms_match_loop_references_on_random_lists():
    rng = np.random.default_rng(0)
    for _ in range(200):
        rel = rng.random(rng.integers(0, 40)) < 0.3
        n_rel = int(rel.sum()) + int(rng.integers(0, 4))
        if n_rel == 0:
            continue
        k = int(rng.integers(1, 45))
        assert lab_ap_at_k(rel, n_rel, k) == pytest.approx(_reference_lab_k(rel, n_rel, k))
        assert gldv2_ap_at_k(rel, n_rel, k) == pytest.approx(_reference_gldv2(rel, n_rel, k))
        assert lab_ap_all(rel, n_rel) == pytest.approx(_reference_gldv2(rel, n_rel, 10**6) * 1)
        assert trapezoid_ap(rel, n_rel) == pytest.approx(_reference_trapezoid(rel, n_rel))
