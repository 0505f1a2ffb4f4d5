"""Diffusion against a dense solve of (I - alpha S) f = y, and where it must win."""

import numpy as np
import pytest

from claid.index import search_images
from claid.rerank.apply import diffuse
from claid.rerank.common import whitened_view
from claid.rerank.diffusion import knn_graph, laplacian, offline_part
from claid.rerank.settings import DiffusionSettings

from .conftest import make_rows


def _dense_graph(xw, region_image, kd, gamma, same_image):
    """Mutual kNN (kd counts the item itself: kd - 1 others; self and optionally the
    own image excluded), sims<0 -> 0, ^gamma, S = D^-1/2 W D^-1/2: written from the formula, all dense."""
    sims = xw.astype(np.float64) @ xw.T.astype(np.float64)
    n = len(xw)
    member = np.zeros((n, n), bool)
    for i in range(n):
        ok = np.arange(n) != i
        if same_image == "exclude":
            ok &= region_image != region_image[i]
        cand = np.flatnonzero(ok)
        member[i, cand[np.argsort(-sims[i, cand], kind="stable")[: kd - 1]]] = True
    w = np.where(member & member.T, np.maximum(sims, 0) ** gamma, 0.0)
    d = w.sum(axis=1) + 1e-12
    return w / np.sqrt(d)[:, None] / np.sqrt(d)[None, :]


def _dense_scores(xw, region_image, qw, s):
    """f = (I - alpha S)^-1 y, y = sum over the query's kq nearest regions of sims^gamma."""
    big_s = _dense_graph(xw, region_image, s.kd, s.gamma, s.same_image)
    lap = np.eye(len(xw)) - s.alpha * big_s
    out = []
    for q in qw:
        sims = xw.astype(np.float64) @ q
        near = np.argsort(-sims, kind="stable")[: s.kq]
        y = np.zeros(len(xw))
        y[near] = np.maximum(sims[near], 0) ** s.gamma
        out.append(np.linalg.solve(lap, y))
    return np.array(out)


def _online(offline, index, rows, qw, s):
    from claid.rerank.apply import seed_regions
    from claid.rerank.diffusion import online_scores

    view = whitened_view(index)
    ids, ok = seed_regions(view, qw, s.kq, rows.region_image, [np.zeros(0, np.int64)] * len(qw))
    sims = np.einsum("qd,qkd->qk", qw, rows.vectors(ids.ravel()).reshape(*ids.shape, -1))
    return online_scores(offline, sims, ids, ok, s.gamma).toarray()


@pytest.mark.parametrize("same_image", ["exclude", "include"])
def test_untruncated_converged_offline_path_equals_the_dense_solve(seeded, same_image):
    x = seeded.normal(size=(180, 8)).astype(np.float32)
    region_image = np.repeat(np.arange(60), 3)
    index, rows, _ = make_rows(x, region_image)
    s = DiffusionSettings(kq=5, kd=8, truncation=180, tol=1e-12, max_iter=2000, same_image=same_image,
                          block_items=37)
    offline, info = offline_part(index, rows, s)
    qw = index.transform(x[:6] + 0.2 * seeded.normal(size=(6, 8)).astype(np.float32))
    want = _dense_scores(index.transform(x), region_image, qw, s)
    got = _online(offline, index, rows, qw, s)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert info["truncation"] == 180


def test_identical_parent_and_child_vectors_make_no_self_loop(seeded):
    x = seeded.normal(size=(60, 6)).astype(np.float32)
    x[1::3] = x[0::3]
    region_image = np.arange(60)  # every region its own image: the twins are neighbours
    index, rows, _ = make_rows(x, region_image)
    w = knn_graph(whitened_view(index), rows.all_vectors(), region_image, kd=4, gamma=3.0,
                  same_image="include", extra=0)
    assert w.diagonal().max() == 0
    assert np.all(w[np.arange(0, 60, 3), np.arange(1, 60, 3)] > 0.99)  # the twin is an edge
    np.testing.assert_allclose(w.toarray(), w.T.toarray())
    assert laplacian(w, 0.99).diagonal().min() == pytest.approx(1.0)


def test_truncated_default_solve_agrees_with_the_dense_solve_at_the_top(seeded):
    x = seeded.normal(size=(600, 8)).astype(np.float32)
    region_image = np.repeat(np.arange(200), 3)
    index, rows, _ = make_rows(x, region_image)
    s = DiffusionSettings(kq=5, kd=10, truncation=200)  # the reference's tol 1e-6, 20 iterations
    offline, _ = offline_part(index, rows, s)
    qw = index.transform(x[:20] + 0.2 * seeded.normal(size=(20, 8)).astype(np.float32))
    want = _dense_scores(index.transform(x), region_image, qw, s)
    got = _online(offline, index, rows, qw, s)
    overlaps = [len(set(np.argsort(-g)[:20]) & set(np.argsort(-w)[:20])) / 20 for g, w in zip(got, want)]
    assert np.mean(overlaps) >= 0.8, overlaps


def _planted(rng, n_chains=6, length=30, dim=32):
    """Chains of points along a quarter circle (neighbours close, ends orthogonal), and
    for each chain distractors closer to its start than its far end, off the chain."""
    vectors, image_class = [], []
    for c in range(n_chains):
        a, b = np.linalg.qr(rng.normal(size=(dim, 2)))[0].T
        for t in np.linspace(0, np.pi / 2, length):
            vectors.append(np.cos(t) * a + np.sin(t) * b + 0.01 * rng.normal(size=dim))
            image_class.append(c)
        for _ in range(length // 2):
            vectors.append(a + 0.9 * rng.normal(size=dim) / np.sqrt(dim))
            image_class.append(-1)
    x = np.array(vectors, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.array(image_class)


def _ap(images, positives):
    hits, total = 0, 0.0
    for rank, image in enumerate(images, 1):
        if image in positives:
            hits += 1
            total += hits / rank
    return total / len(positives)


def test_on_planted_manifolds_diffusion_beats_the_plain_search(seeded):
    x, image_class = _planted(seeded)
    region_image = np.arange(len(x))
    index, rows, table = make_rows(x, region_image)
    starts = [int(np.flatnonzero(image_class == c)[0]) for c in range(6)]
    queries = x[starts] + 0.01 * seeded.normal(size=(6, x.shape[1])).astype(np.float32)
    own = [{f"img{i}"} for i in starts]
    positives = [{f"img{i}" for i in np.flatnonzero(image_class == c)} - own[c] for c in range(6)]
    plain = search_images(index, queries, table.region_image, table.boxes, table.image_ids,
                          [str(c) for c in range(6)], k=None, exclude=own)
    s = DiffusionSettings(kq=3, kd=5, truncation=200)
    offline, _ = offline_part(index, rows, s)
    diffused = diffuse(offline, index, rows, index.transform(queries), [str(c) for c in range(6)],
                       own, own, s)
    plain_map = np.mean([_ap(r.images, p) for r, p in zip(plain, positives)])
    diffused_map = np.mean([_ap(r.images, p) for r, p in zip(diffused, positives)])
    assert diffused_map > plain_map + 0.2, (plain_map, diffused_map)
    assert diffused_map > 0.9
    # each image keeps the box of the region that ranks it
    for r in diffused:
        for image, box in zip(r.images[:5], r.boxes[:5]):
            assert np.array_equal(box, table.boxes[int(image[3:])])


def test_out_of_reach_stops_before_any_work(seeded):
    from claid.rerank.diffusion import OutOfReach

    x = seeded.normal(size=(300, 8)).astype(np.float32)
    index, rows, _ = make_rows(x, np.repeat(np.arange(100), 3))
    with pytest.raises(OutOfReach, match="largest collection measured within 15 min .* is 299 regions"):
        offline_part(index, rows, DiffusionSettings(kd=5, truncation=50, max_regions=299))
    with pytest.raises(OutOfReach, match="needs about .* GiB, more than rerank.diffusion.max_gb=1e-06"):
        offline_part(index, rows, DiffusionSettings(kd=5, truncation=50, max_gb=1e-6))
