"""alpha-QE and DBA against direct implementations of their published formulas."""

import faiss
import numpy as np
import pytest

from claid.index import search_images
from claid.rerank.aqe import expand_queries
from claid.rerank.dba import augmented_index, augmented_vectors

from .conftest import make_rows


def _unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def _direct_aqe(xw, region_image, qw, excluded, n, alpha):
    """q' = normalise(q + sum_{i<=n} s_i^alpha x_i), x_i the best region of each of the
    first n images by best-region similarity, excluded images skipped."""
    out = []
    for q, banned in zip(qw, excluded):
        sims = xw.astype(np.float64) @ q
        best = {}
        for row in np.argsort(-sims, kind="stable"):
            image = int(region_image[row])
            if image not in best and image not in banned and sims[row] > 0:
                best[image] = row
        rows = list(best.values())[:n]
        total = q.astype(np.float64) + sum(sims[r] ** alpha * xw[r] for r in rows)
        out.append(total / np.linalg.norm(total))
    return np.array(out)


@pytest.mark.parametrize("whitening", ["none", "database"])
def test_alpha_qe_equals_the_formula_and_skips_what_the_protocol_drops(seeded, whitening):
    x = seeded.normal(size=(300, 16)).astype(np.float32)
    region_image = np.repeat(np.arange(50), 6)
    index, rows, table = make_rows(x, region_image, whitening=whitening)
    queries = x[[3, 100, 200]] + 0.3 * seeded.normal(size=(3, 16)).astype(np.float32)
    own = [{"img0"}, {"img16"}, set()]
    rankings = search_images(index, queries, table.region_image, table.boxes, table.image_ids,
                             ["a", "b", "c"], k=None, exclude=own)
    junk = [own[0] | {rankings[0].images[0]}, own[1], {rankings[2].images[1]}]
    xw, qw = index.transform(x), index.transform(queries)
    got = expand_queries(index, rows, queries, rankings, junk, n=4, alpha=3.0)
    banned = [{int(i[3:]) for i in s} for s in junk]
    np.testing.assert_allclose(got, _direct_aqe(xw, region_image, qw, banned, 4, 3.0), atol=1e-6)
    # a dropped image changes the result: the top image of query 0 is not used
    kept = expand_queries(index, rows, queries, rankings, own, n=4, alpha=3.0)
    assert not np.allclose(kept[0], got[0], atol=1e-4) and np.allclose(kept[1], got[1])


def _direct_dba(xw, region_image, n, alpha, same_image):
    out = np.empty_like(xw, dtype=np.float64)
    for j, v in enumerate(xw.astype(np.float64)):
        sims = xw.astype(np.float64) @ v
        ok = np.arange(len(xw)) != j
        if same_image == "exclude":
            ok &= region_image != region_image[j]
        cand = np.flatnonzero(ok)
        near = cand[np.argsort(-sims[cand], kind="stable")[:n]]
        total = v + (np.maximum(sims[near], 0) ** alpha) @ xw[near]
        out[j] = total / np.linalg.norm(total)
    return out


@pytest.mark.parametrize("same_image", ["exclude", "include"])
def test_dba_equals_the_formula_with_identical_parent_and_child_vectors(seeded, same_image):
    x = seeded.normal(size=(240, 12)).astype(np.float32)
    x[1::6] = x[0::6]  # a child identical to its parent: both at similarity 1
    region_image = np.repeat(np.arange(40), 6)
    index, rows, _ = make_rows(x, region_image)
    got, info = augmented_vectors(index, rows, n=5, alpha=3.0, same_image=same_image, block_rows=37)
    want = _direct_dba(index.transform(x), region_image, 5, 3.0, same_image)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert info["rows_with_fewer_than_n"] == 0


def test_dba_over_ivfpq_reencodes_with_the_trained_quantiser(seeded):
    x = _unit(seeded.normal(size=(10000, 16))).astype(np.float32)
    region_image = np.repeat(np.arange(2500), 4)
    index, rows, _ = make_rows(x, region_image, factory="IVF16,PQ4", nprobe=16)
    vectors, _ = augmented_vectors(index, rows, n=3, alpha=3.0)
    new = augmented_index(index, vectors, {"n": 3})
    old_ivf, new_ivf = (faiss.extract_index_ivf(i.faiss_index) for i in (index, new))
    old_c = faiss.vector_to_array(faiss.downcast_index(old_ivf.quantizer).codes)
    new_c = faiss.vector_to_array(faiss.downcast_index(new_ivf.quantizer).codes)
    assert np.array_equal(old_c, new_c) and new.ntotal == index.ntotal
    assert "re-encoded" in new.meta["dba"]["note"]
    # the new codes are the DBA vectors': each one finds itself first (approximately)
    _, ids = new.faiss_index.search(vectors[:200], 1)
    assert np.mean(ids[:, 0] == np.arange(200)) > 0.5
