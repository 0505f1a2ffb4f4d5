"""Diffusion with the default ``kd`` equals fyang93/diffusion with its default ``kd``.

The reference is copied verbatim into ``tests/reference/fyang93_diffusion/`` (MIT,
commit 5f5c6b3dae1bf887c686c0f424869b417d632481): ``Diffusion.get_offline_results``
builds the offline matrix, ``rank.search_old`` ranks the queries (the query is not a
graph node, as in claid). Two shims let that 2020 code run on today's libraries, and
change nothing it computes: scipy's ``cg`` keyword ``tol`` is now ``rtol``, and
numpy's ``np.int`` alias is gone.
"""

import importlib
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import linalg as scipy_linalg

from claid.rerank.diffusion import offline_part, online_scores
from claid.rerank.settings import DiffusionSettings

from .conftest import make_rows

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "fyang93_diffusion"
NAMES = ("diffusion", "knn", "rank", "dataset", "evaluate")


@pytest.fixture
def reference(monkeypatch):
    """The reference's ``diffusion`` and ``rank`` modules, imported from their folder
    (their own ``from knn import KNN`` style), removed from ``sys.modules`` afterwards."""
    saved = {name: sys.modules.pop(name) for name in NAMES if name in sys.modules}
    sys.path.insert(0, str(REFERENCE))
    try:
        diffusion = importlib.import_module("diffusion")
        rank = importlib.import_module("rank")
    finally:
        sys.path.remove(str(REFERENCE))
    cg = scipy_linalg.cg
    monkeypatch.setattr(diffusion, "linalg", types.SimpleNamespace(
        cg=lambda a, b, tol, maxiter: cg(a, b, rtol=tol, maxiter=maxiter)))
    monkeypatch.setattr(np, "int", int, raising=False)
    yield diffusion, rank
    for name in NAMES:
        sys.modules.pop(name, None)
    sys.modules.update(saved)


def _unit(rng, shape):
    x = rng.normal(size=shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_default_kd_equals_the_reference_default(reference, tmp_path):
    ref_diffusion, ref_rank = reference
    rng = np.random.default_rng(3)
    centres = _unit(rng, (12, 16))
    gallery = _unit(np.random.default_rng(4), (300, 16)) * 0.6 + np.repeat(centres, 25, axis=0)
    gallery = (gallery / np.linalg.norm(gallery, axis=1, keepdims=True)).astype(np.float32)
    queries = centres[:5] + 0.3 * _unit(rng, (5, 16))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    truncation = 120

    # the reference, its defaults: kd = 50 (rank.parse_args), kq = 10, gamma 3, alpha 0.99
    args = types.SimpleNamespace(cache_dir=str(tmp_path), truncation_size=truncation, kq=10, kd=50)
    captured = {}
    ref_rank.args, ref_rank.gallery, ref_rank.queries = args, gallery, queries
    ref_rank.evaluate = lambda ranks: captured.setdefault("ranks", ranks)
    ref_rank.search_old()
    want_offline = ref_diffusion.Diffusion(gallery, str(tmp_path)).get_offline_results(truncation, 50)
    sims, ids = ref_diffusion.Diffusion(gallery, str(tmp_path)).knn.search(queries, 10)
    want_scores = np.stack([(sims[i] ** 3) @ want_offline[ids[i]] for i in range(len(queries))])  # search_old

    # claid, its defaults except the truncation (one region per image: same_image moot)
    s = DiffusionSettings(truncation=truncation)
    assert (s.kd, s.kq, s.gamma, s.alpha) == (50, 10, 3.0, 0.99)
    index, rows, _ = make_rows(gallery, np.arange(len(gallery)))
    got_offline, _ = offline_part(index, rows, s)
    np.testing.assert_allclose(got_offline.toarray(), want_offline.toarray(), atol=1e-5)
    assert np.all(sims > 0)  # claid clips negative similarities, the reference's search_old does not
    got_scores = online_scores(got_offline, sims, ids, ids >= 0, s.gamma).toarray()
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-5 * np.abs(want_scores).max())
    got_ranks = np.argsort(-got_scores, axis=1, kind="stable")[:, :truncation]
    top = 20
    assert np.array_equal(got_ranks[:, :top], captured["ranks"][:, :top])


def test_one_neighbour_more_is_not_the_reference(reference, tmp_path):
    """The reading this replaces (kd other regions) gives a different offline matrix."""
    ref_diffusion, _ = reference
    gallery = _unit(np.random.default_rng(5), (200, 8))
    want = ref_diffusion.Diffusion(gallery, str(tmp_path)).get_offline_results(80, 50).toarray()
    index, rows, _ = make_rows(gallery, np.arange(len(gallery)))
    same, _ = offline_part(index, rows, DiffusionSettings(kd=50, truncation=80))
    more, _ = offline_part(index, rows, DiffusionSettings(kd=51, truncation=80))
    np.testing.assert_allclose(same.toarray(), want, atol=1e-5)
    assert np.abs(more.toarray() - want).max() > 1e-3
