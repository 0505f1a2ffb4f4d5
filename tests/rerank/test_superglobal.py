"""rerank=superglobal equals the reference MDescAug / RerankwMDA of
ShihaoShao-GH/SuperGlobal (MIT, commit 86946964b907e6f28a7264add2c15640fae30009),
copied verbatim into ``tests/reference/superglobal/``, on random cases: the same
re-ordered lists. The reference moves its tensors to CUDA; the tests make
``Tensor.cuda`` return the tensor itself (nothing it computes changes), and give it
float64 tensors: claid computes in float64, and the shortlist's scores lie so close
together (gaps of 1e-7) that float32 rounding alone would swap neighbours."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from claid.index import search_images
from claid.rerank.settings import SuperGlobalSettings, parse_rerank
from claid.rerank.superglobal import superglobal_rankings

from .conftest import make_rows

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "superglobal"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"superglobal_{name}", REFERENCE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


@pytest.fixture
def reference(monkeypatch):
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    return _load("MDescAug")(), _load("RerankwMDA")()  # the paper's M=400, K=9, beta=0.15


def _case(seed, n_images, regions, dim=24):
    """Region vectors around a common direction (every similarity > 0: the search keeps
    every image), ``regions`` per image."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_images * regions, dim)) + 2.5 * rng.normal(size=dim)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    q = rng.normal(size=(4, dim)) + 8.0 * x.mean(axis=0)
    return x, np.repeat(np.arange(n_images), regions), q.astype(np.float32)


def _reference_lists(reference, index, rows, qw, n_images):
    """The reference on each image's best region for each query: image numbers, best first."""
    mdescaug, rerank = reference
    x = rows.all_vectors()
    lists = []
    for q in qw:
        best = np.array([np.flatnonzero(rows.region_image == i)[np.argmax(x[rows.region_image == i] @ q)]
                         for i in range(n_images)])
        images_x = torch.tensor(x[best], dtype=torch.float64)
        query = torch.tensor(q[None], dtype=torch.float64)
        ranks = torch.argsort(-(images_x @ query.T), axis=0)
        with torch.no_grad():
            ranks = rerank(ranks, *mdescaug(images_x, query, ranks))
        lists.append(ranks[:, 0].numpy())
    return lists


@pytest.mark.parametrize(("seed", "n_images", "regions"), [(0, 600, 1), (1, 450, 3), (2, 150, 2)])
def test_same_reordered_lists_as_the_reference(reference, seed, n_images, regions):
    x, region_image, q = _case(seed, n_images, regions)
    index, rows, table = make_rows(x, region_image)
    qids = [f"q{i}" for i in range(len(q))]
    plain = search_images(index, q, table.region_image, table.boxes, table.image_ids, qids, k=None)
    assert all(len(r.images) == n_images for r in plain)
    s = SuperGlobalSettings()
    assert (s.m, s.k, s.beta) == (400, 9, 0.15)
    got = superglobal_rankings(rows, index.transform(q), plain, [set()] * len(q), m=s.m, k=s.k, beta=s.beta)
    want = _reference_lists(reference, index, rows, index.transform(q), n_images)
    for g, w, p in zip(got, want, plain):
        assert [int(i[3:]) for i in g.images] == w.tolist()
        assert g.images != p.images  # it did re-order
        box = dict(zip(p.images, map(tuple, p.boxes)))
        assert all(box[i] == tuple(b) for i, b in zip(g.images, g.boxes))


def test_excluded_images_leave_the_shortlist_and_follow_it(reference):
    x, region_image, q = _case(3, 300, 1)
    index, rows, table = make_rows(x, region_image)
    plain = search_images(index, q[:1], table.region_image, table.boxes, table.image_ids, ["q"], k=None)
    dropped = {plain[0].images[0], plain[0].images[5]}
    got = superglobal_rankings(rows, index.transform(q[:1]), plain, [dropped], m=50, k=9, beta=0.15)[0]
    head = [i for i in plain[0].images if i not in dropped][:50]
    assert sorted(got.images[:50]) == sorted(head)
    assert got.images[50:52] == [plain[0].images[0], plain[0].images[5]]
    assert got.images[52:] == [i for i in plain[0].images[52:]]
    kept = [set()]
    whole = superglobal_rankings(rows, index.transform(q[:1]), plain, kept, m=50, k=9, beta=0.15)[0]
    assert whole.images[:50] != got.images[:50]


def test_settings_are_checked():
    assert parse_rerank({"superglobal": {}})["superglobal"] == SuperGlobalSettings()
    with pytest.raises(ValueError, match="rerank.superglobal k must be an integer >= 1"):
        parse_rerank({"superglobal": {"k": 0}})
    with pytest.raises(ValueError, match="rerank.superglobal m must be larger than k"):
        parse_rerank({"superglobal": {"m": 5, "k": 9}})


def test_runs_last_in_the_running_order(seeded):
    """rerank=[aqe,superglobal]: alpha-QE's list, then its head re-ordered by SuperGlobal
    with the expanded query."""
    from claid.rerank.apply import search_whitened
    from claid.rerank.aqe import expand_queries
    from claid.rerank.methods import rerank

    x, region_image, q = _case(4, 200, 2)
    index, rows, table = make_rows(x, region_image)
    qids = ["a", "b", "c", "d"]
    own = [set()] * 4
    plain = search_images(index, q, table.region_image, table.boxes, table.image_ids, qids, k=None)
    methods = parse_rerank({"aqe": {}, "superglobal": {"m": 60}})
    got, notes = rerank(methods, index=index, rows=rows, query_vectors=q, qids=qids, own=own,
                        exclusions=own, rankings=plain, k=None, memory_gb=1.0, prepare=None)
    qe = expand_queries(index, rows, q, plain, own, n=10, alpha=3.0)
    after_qe = search_whitened(index, rows, qe, qids, own, None, 1.0)
    want = superglobal_rankings(rows, qe, after_qe, own, m=60, k=9, beta=0.15)
    assert [r.images for r in got] == [r.images for r in want]
    assert [r.images for r in got] != [r.images for r in after_qe]
    assert notes["superglobal"]["m"] == 60
