"""rerank=ames: the shortlist, the fusion with the published defaults, batching with
padding, and its place in the running order."""

import numpy as np
import pytest
import torch

from claid.rerank.ames import ames_rankings, ames_scores
from claid.rerank.ames_model import build_ames
from claid.rerank.apply import LocalInputs
from claid.rerank.local_features.binarise import binary_codes, unpack_codes
from claid.rerank.local_features.store import LocalFeatures, LocalFeatureStore
from claid.rerank.methods import rerank
from claid.rerank.settings import AmesSettings, parse_rerank
from claid.structures import Ranking

DIM = 768


def _setup(tmp_path, binarised, n_images=30, seed=0):
    rng = np.random.default_rng(seed)
    model, _ = build_ames(binarised=binarised, pretrained=False, seed=seed)
    projection = model.remap_local[0].W.numpy() if binarised else None
    store = LocalFeatureStore(tmp_path / "local", key={"t": seed}, encoding="binary" if binarised else "float16",
                              dim=DIM, k=100)
    raw = {}
    for i in range(n_images - 1):  # the last image has no stored descriptors
        n = int(rng.integers(20, 101))
        d = rng.normal(size=(n, DIM)).astype(np.float32)
        raw[f"img{i}"] = d
        enc = binary_codes(d, projection) if binarised else d.astype(np.float16)
        store.append(f"img{i}", LocalFeatures(enc, np.arange(n), np.ones(n, np.float32), (10, 10)))
    ranking = Ranking("q", [f"img{i}" for i in range(n_images)], np.linspace(0.9, 0.3, n_images).astype(np.float32),
                      np.arange(n_images * 4, dtype=np.float32).reshape(-1, 4))
    query = rng.normal(size=(60, DIM)).astype(np.float32)
    return model, store, ranking, query, projection


def _one_pair(model, store, query, image, projection):
    """The model on one unpadded pair (no batching)."""
    stored = store.get(image).descriptors
    if model.binarised:
        q = unpack_codes(binary_codes(query, projection), 128)
        d = unpack_codes(stored, 128)
    else:
        q, d = query, stored.astype(np.float32)
    with torch.no_grad():
        return float(model(torch.from_numpy(q)[None], torch.zeros(1, len(q), dtype=torch.bool),
                           torch.from_numpy(d)[None], torch.zeros(1, len(d), dtype=torch.bool),
                           codes=model.binarised))


@pytest.mark.parametrize("binarised", [False, True])
def test_shortlist_fused_with_the_published_defaults(tmp_path, binarised):
    model, store, ranking, query, projection = _setup(tmp_path, binarised)
    settings = AmesSettings(binarised=binarised, num_rerank=12, batch=5)
    assert settings.fusion == ((0.35, 0.10) if binarised else (0.55, 0.30))
    dropped = {"img2", "img7"}
    got = ames_rankings(model, store, [query], [ranking], [dropped], settings)[0]
    head = [f"img{i}" for i in range(30) if f"img{i}" not in dropped][:12]
    raw = np.array([_one_pair(model, store, query, i, projection) for i in head])
    batched = ames_scores(model, store, query, head, batch=5)
    np.testing.assert_allclose(batched, raw, atol=1e-5, rtol=1e-5)  # padding changes nothing
    assert np.ptp(raw) > 0.01
    lam, gamma = settings.fusion
    global_scores = ranking.scores[[ranking.images.index(i) for i in head]].astype(np.float64)
    fused = lam * global_scores + (1 - lam) / (1 + np.exp(-gamma * raw))  # the reference's fusion
    want = [head[i] for i in np.argsort(-fused, kind="stable")]
    assert got.images[:12] == want
    np.testing.assert_allclose(got.scores[:12], np.sort(fused)[::-1], rtol=1e-6)
    assert got.images[12:14] == ["img2", "img7"]  # skipped images of the head follow it
    assert got.images[14:] == ranking.images[14:]
    boxes = dict(zip(ranking.images, map(tuple, ranking.boxes)))
    assert all(boxes[i] == tuple(b) for i, b in zip(got.images, got.boxes))


def test_short_lists_and_images_without_descriptors(tmp_path):
    model, store, ranking, query, _ = _setup(tmp_path, False, n_images=6)
    got = ames_rankings(model, store, [query], [ranking], [set()], AmesSettings())[0]
    assert sorted(got.images[:5]) == [f"img{i}" for i in range(5)]  # 5 of num_rerank=100 re-ranked
    assert got.images[5] == "img5"  # no descriptors stored: after the shortlist


def test_runs_from_the_running_order_and_needs_its_inputs(tmp_path):
    model, store, ranking, query, _ = _setup(tmp_path, False)
    ranking.scores[:] = np.linspace(0.5, 0.49, 30)  # close global scores: AMES decides
    methods = parse_rerank({"ames": {"num_rerank": 8}})
    args = dict(index=None, rows=None, query_vectors=np.zeros((1, 4), np.float32), qids=["q"], own=[set()],
                exclusions=[set()], rankings=[ranking], k=None, memory_gb=1.0, prepare=None)

    class Identity:  # rerank() puts the query vectors through the index's transform
        def transform(self, x):
            return x

    args["index"] = Identity()
    got, notes = rerank(methods, **args, local=LocalInputs(model, store, [query], {"model": "random(0)"}))
    want = ames_rankings(model, store, [query], [ranking], [set()], methods["ames"])
    assert got[0].images == want[0].images != ranking.images
    assert notes["ames"]["lambda_used"] == 0.55 and notes["ames"]["model"] == "random(0)"
    with pytest.raises(ValueError, match="rerank=ames needs the local-descriptor store"):
        rerank(methods, **args)


def test_store_and_model_variants_must_match(tmp_path):
    model, store, ranking, query, _ = _setup(tmp_path, False, n_images=3)
    binary_model, _ = build_ames(binarised=True, pretrained=False)
    with pytest.raises(ValueError, match="binarised AMES model reads codes"):
        ames_scores(binary_model, store, query, ["img0"])


def test_settings_are_checked():
    assert parse_rerank({"ames": {}})["ames"] == AmesSettings()
    assert AmesSettings(binarised=True, lam=0.5).fusion == (0.5, 0.10)
    for bad, message in [({"lam": 1.5}, "lam must be null"), ({"gamma": 0}, "gamma must be null"),
                         ({"binarised": "yes"}, "binarised must be true or false"),
                         ({"num_rerank": 0}, "num_rerank must be an integer >= 1"),
                         ({"checkpoint": 3}, "checkpoint must be a path")]:
        with pytest.raises(ValueError, match=f"rerank.ames {message}"):
            parse_rerank({"ames": bad})
