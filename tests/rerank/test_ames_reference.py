"""AMES, its detector and its top-k selection equal the reference code of
github pavelsuma/ames (Apache-2.0, commit c6af26e2ab3e966f658e44fb098a70dfa45310b0),
copied verbatim into ``tests/reference/ames/``: random-weight reference models are saved
in the release checkpoint format (``{"state": state_dict}``) and loaded by claid.
The reference's extraction moves tensors to CUDA; the tests make ``Tensor.cuda`` return
the tensor itself (nothing it computes changes)."""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from claid.models.weights import WeightsUnavailableError
from claid.rerank.ames_model import build_ames
from claid.rerank.local_features.binarise import binary_codes, unpack_codes
from claid.rerank.local_features.detector import build_detector
from claid.rerank.local_features.selection import grid_positions, nms_keep, select_local

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "ames"
MODULES = ("models", "models.matcher", "models.binarization_layer", "models.transformer_dec",
           "spatial_attention_2d", "extract_dino")
PUBLISHED = dict(local_dim=768, model_dim=128, nhead=2, num_encoder_layers=5, dim_feedforward=1024,
                 activation="relu", normalize_before=False)  # conf/model/ames.yaml


@pytest.fixture(scope="module")
def ref():
    saved = {name: sys.modules.pop(name) for name in MODULES if name in sys.modules}
    paths = [str(REFERENCE / "src"), str(REFERENCE / "extract")]
    sys.path[:0] = paths
    try:
        modules = {name: importlib.import_module(name) for name in ("models.matcher", "spatial_attention_2d",
                                                                     "extract_dino")}
    finally:
        for p in paths:
            sys.path.remove(p)
    yield modules
    for name in MODULES:
        sys.modules.pop(name, None)
    sys.modules.update(saved)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)


def _jitter(module, seed):
    """Every parameter and buffer moved off its initial value (LayerNorms not 1 / 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if tensor.dtype.is_floating_point:
                noise = torch.randn(tensor.shape, generator=g) * 0.05
                tensor.add_(noise.abs() if "running_var" in name else noise)


def _reference_ames(ref, tmp_path, binarised, seed):
    torch.manual_seed(seed)
    (tmp_path / "networks").mkdir(exist_ok=True)
    np.savez(tmp_path / "networks" / "itq_dinov2_D128.npz",
             proj=np.random.default_rng(seed).normal(size=(768, 128)).astype(np.float32))
    model = ref["models.matcher"].AMES(data_root=str(tmp_path), binarized=binarised, **PUBLISHED)
    _jitter(model, seed)
    name = "dinov2_ames_dist.pt" if binarised else "dinov2_ames.pt"
    torch.save({"state": model.state_dict(), "epoch": 7}, tmp_path / name)
    return model.eval()


def _pairs(seed, b=12, q=600, t=100):
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(q, 768)).astype(np.float32)
    query_pad = np.zeros(q, bool)
    query_pad[550:] = True  # a query with 550 descriptors
    database = rng.normal(size=(b, t, 768)).astype(np.float16).astype(np.float32)  # stored float16
    database_pad = np.zeros((b, t), bool)
    for i in range(b):
        database_pad[i, rng.integers(40, t + 1):] = True
    return query, query_pad, database, database_pad


@pytest.mark.parametrize("binarised", [False, True])
def test_release_format_model_scores_equal_the_reference(ref, tmp_path, binarised):
    reference = _reference_ames(ref, tmp_path, binarised, seed=1)
    ours, source = build_ames(binarised=binarised, pretrained=True, cache_dir=str(tmp_path))
    assert ("dinov2_ames_dist.pt (sha256 " if binarised else "dinov2_ames.pt (sha256 ") in source
    query, query_pad, database, database_pad = _pairs(2)
    b = database.shape[0]
    args = (torch.from_numpy(query)[None].expand(b, -1, -1), torch.from_numpy(query_pad)[None].expand(b, -1),
            torch.from_numpy(database), torch.from_numpy(database_pad))
    with torch.no_grad():
        want = reference(*args).numpy()
        if binarised:  # claid scores the stored 128-bit codes
            w = ours.remap_local[0].W.numpy()
            q_codes = torch.from_numpy(unpack_codes(binary_codes(query, w), 128))[None].expand(b, -1, -1)
            db_codes = torch.from_numpy(unpack_codes(binary_codes(database, w), 128))
            got = ours(q_codes, args[1], db_codes, args[3], codes=True).numpy()
        else:
            got = ours(*args).numpy()
    assert np.abs(want).max() > 0.05 and np.std(want) > 1e-3  # the scores say something
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_missing_release_file_names_file_place_and_fix(tmp_path):
    with pytest.raises(WeightsUnavailableError) as err:
        build_ames(binarised=True, pretrained=True, cache_dir=str(tmp_path))
    text = str(err.value)
    assert "dinov2_ames_dist.pt" in text and str(tmp_path) in text and "rerank.ames.checkpoint=" in text
    assert "pretrained=false" in text and "\n" not in text


def test_wrong_or_unsafe_files_are_refused(tmp_path):
    torch.save({"state": {"classifier.weight": torch.zeros(1, 128)}}, tmp_path / "part.pt")
    with pytest.raises(WeightsUnavailableError, match="does not fit the ames model"):
        build_ames(binarised=False, pretrained=True, checkpoint=str(tmp_path / "part.pt"))
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(WeightsUnavailableError, match="no 'state' dict"):
        build_ames(binarised=False, pretrained=True, checkpoint=str(tmp_path / "other.pt"))
    torch.save({"state": {}, "code": np.dtype}, tmp_path / "code.pt")  # needs a code-running load
    with pytest.raises(WeightsUnavailableError, match="not a weight file that loads safely"):
        build_ames(binarised=False, pretrained=True, checkpoint=str(tmp_path / "code.pt"))


def test_random_weights_are_seeded():
    a, source = build_ames(binarised=True, pretrained=False, seed=3)
    b, _ = build_ames(binarised=True, pretrained=False, seed=3)
    c, _ = build_ames(binarised=True, pretrained=False, seed=4)
    assert source == "random(3)"
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.mtc_token, c.mtc_token)


def _reference_detector(ref, tmp_path, seed):
    torch.manual_seed(seed)
    detector = ref["spatial_attention_2d"].SpatialAttention2d(768)
    _jitter(detector, seed)
    torch.save({"state": detector.state_dict()}, tmp_path / "detector.pt")
    return detector.eval()


@pytest.mark.parametrize("k", [100, 600, 2000])
def test_detector_and_selection_equal_the_reference(ref, tmp_path, no_cuda, k):
    reference = _reference_detector(ref, tmp_path, seed=5)
    ours, _ = build_detector(dim=768, pretrained=True, checkpoint=str(tmp_path / "detector.pt"))
    h, w = 23, 37  # a 322 x 518 network input, patch 14
    tokens = np.random.default_rng(6).normal(size=(h * w, 768)).astype(np.float32)
    extract = ref["extract_dino"]
    with torch.no_grad():  # the reference's extract_features on one image, then get_local
        feats = torch.from_numpy(tokens)[None]
        div = extract.find_divisors(feats.shape[1])
        feats = feats.permute(0, -1, -2).reshape(feats.shape[0], feats.shape[-1], div[-1], -1)
        feats, weights = reference(feats)
        top_feats, top_w, _, locations, seq_len = extract.get_local(
            [feats], [weights], [torch.zeros(1, 3, h * 14, w * 14)], 14, topk=k)
    descriptors, heat = ours.detect(tokens, (h, w))
    np.testing.assert_allclose(heat.ravel(), weights.numpy().ravel(), atol=1e-5, rtol=1e-5)
    kept = select_local(heat, k)
    assert len(kept) == seq_len == min(k, h * w)
    np.testing.assert_allclose(descriptors[kept], top_feats[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(heat.ravel()[kept], top_w[0].numpy(), atol=1e-5, rtol=1e-5)
    rows_cols = grid_positions(kept, (h, w)).astype(np.float64)
    centres = (rows_cols + 0.5) / np.array([h, w])
    np.testing.assert_allclose(centres, locations[0].numpy(), atol=1e-6)


def test_nms_keeps_what_the_reference_function_keeps(ref):
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:20, :30]
    heat = sum(np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 3.0) for y, x in rng.integers(0, [20, 30], (8, 2)))
    heat = (heat + 0.01 * rng.random((20, 30))).astype(np.float32)  # peaks with sloping sides
    want = ref["extract_dino"].non_maxima_suppression_2d(torch.from_numpy(heat)[None, None])[0, 0].numpy()
    np.testing.assert_array_equal(nms_keep(heat), want)
    assert 8 <= want.sum() < 200
    kept = select_local(heat, 500, nms=True)
    assert len(kept) == want.sum() and want.ravel()[kept].all()  # every survivor, none other
    assert np.all(np.diff(heat.ravel()[kept]) <= 0)  # highest first
    plain = select_local(heat, len(kept))
    assert not want.ravel()[plain].all()  # without nms some suppressed positions are kept
