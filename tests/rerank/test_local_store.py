"""The local-descriptor store: round trip, bytes per image, resuming after a crash,
refusing damaged or foreign files; and the extraction stage over it."""

import json

import numpy as np
import pytest
import torch

from claid.artifacts import DamagedArtifactError
from claid.rerank.local_features.binarise import binary_codes, unpack_codes
from claid.rerank.local_features.detector import build_detector
from claid.rerank.local_features.extract_local import local_features_stage, query_local_features
from claid.rerank.local_features.store import LocalFeatures, LocalFeatureStore
from claid.rerank.settings import AmesSettings
from claid.structures import PatchGrid

KEY = {"source": "test"}


def _features(rng, n, grid=(20, 30), binary=False, dim=16):
    d = rng.integers(0, 256, (n, 16), dtype=np.uint8) if binary else rng.normal(size=(n, dim)).astype(np.float16)
    pos = rng.choice(grid[0] * grid[1], n, replace=False)
    return LocalFeatures(d, pos, np.sort(rng.random(n).astype(np.float32))[::-1], grid)


@pytest.mark.parametrize("binary", [False, True])
def test_round_trip(tmp_path, seeded, binary):
    store = LocalFeatureStore(tmp_path / "s", key=KEY, encoding="binary" if binary else "float16", dim=16, k=100)
    written = {f"img{i}": _features(seeded, n, binary=binary) for i, n in enumerate([100, 3, 0, 57])}
    for image_id, f in written.items():
        store.append(image_id, f)
    again = LocalFeatureStore(tmp_path / "s")  # opened as a stranger's folder
    assert len(again) == 4 and "img9" not in again and again.get("img9") is None
    for image_id, f in written.items():
        got = again.get(image_id)
        assert got.descriptors.dtype == (np.uint8 if binary else np.float16)
        np.testing.assert_array_equal(got.descriptors, f.descriptors)
        np.testing.assert_array_equal(got.positions, f.positions)
        np.testing.assert_allclose(got.weights, f.weights, rtol=1e-3)
        assert got.grid == f.grid


def test_binarised_image_of_100_descriptors_takes_2000_bytes(tmp_path, seeded):
    store = LocalFeatureStore(tmp_path / "s", key=KEY, encoding="binary", dim=768, k=100)
    store.append("a", _features(seeded, 100, binary=True))
    assert (tmp_path / "s" / "data.bin").stat().st_size == 2000 == store.bytes_per_image()  # 1600 of codes


def test_resumes_after_a_torn_write(tmp_path, seeded):
    store = LocalFeatureStore(tmp_path / "s", key=KEY, dim=16, k=100)
    first = _features(seeded, 10)
    store.append("a", first)
    with open(tmp_path / "s" / "data.bin", "ab") as f:
        f.write(b"\x01" * 77)  # a record whose index line never came
    with open(tmp_path / "s" / "index.jsonl", "ab") as f:
        f.write(b'{"image_id": "b", "off')  # a torn last line
    store = LocalFeatureStore(tmp_path / "s", key=KEY)
    assert list(store.entries) == ["a"]
    second = _features(seeded, 5)
    store.append("b", second)
    again = LocalFeatureStore(tmp_path / "s")
    np.testing.assert_array_equal(again.get("a").descriptors, first.descriptors)
    np.testing.assert_array_equal(again.get("b").descriptors, second.descriptors)
    assert (tmp_path / "s" / "data.bin").stat().st_size == again.record_bytes(15)


def test_damaged_or_foreign_files_are_refused(tmp_path, seeded):
    folder = tmp_path / "s"
    store = LocalFeatureStore(folder, key=KEY, dim=16, k=100)
    store.append("a", _features(seeded, 10))
    with pytest.raises(ValueError, match="another key"):
        LocalFeatureStore(folder, key={"source": "other"})
    data = bytearray((folder / "data.bin").read_bytes())
    data[5] ^= 0xFF
    (folder / "data.bin").write_bytes(bytes(data))
    with pytest.raises(DamagedArtifactError, match="fails its SHA-256"):
        LocalFeatureStore(folder).get("a")
    line = json.loads((folder / "index.jsonl").read_text())
    (folder / "index.jsonl").write_text(json.dumps({**line, "n": 101}) + "\n")
    with pytest.raises(DamagedArtifactError, match="line 1: n 101"):
        LocalFeatureStore(folder)
    (folder / "index.jsonl").write_text(json.dumps({**line, "n": 11}) + "\n")
    with pytest.raises(DamagedArtifactError, match="runs past the end"):
        LocalFeatureStore(folder)
    meta = json.loads((folder / "store.json").read_text())
    (folder / "store.json").write_text(json.dumps({**meta, "schema_version": 9}))
    with pytest.raises(DamagedArtifactError, match="schema 9"):
        LocalFeatureStore(folder)
    (folder / "store.json").write_text(json.dumps({**meta, "encoding": "pickle"}))
    with pytest.raises(DamagedArtifactError, match="encoding"):
        LocalFeatureStore(folder)


class TinyBackbone:
    """extract_patches: seeded tokens per image size (a 'image' here is its (h, w) grid)."""

    def __init__(self):
        self.calls = 0

    def extract_patches(self, image):
        self.calls += 1
        h, w = image
        tokens = np.random.default_rng(h * 100 + w).normal(size=(h * w, 32)).astype(np.float32)
        return PatchGrid(tokens=tokens, grid=(h, w), patch_size=14)


@pytest.mark.parametrize("binarised", [False, True])
def test_stage_stores_every_image_once_and_resumes(tmp_path, binarised):
    settings = AmesSettings(binarised=binarised, database_k=20, pretrained=False)
    detector, source = build_detector(dim=32, pretrained=False, seed=1)
    projection = np.random.default_rng(2).normal(size=(32, 128)).astype(np.float32) if binarised else None
    backbone = TinyBackbone()
    images = [(f"img{i}", (6 + i, 7)) for i in range(5)]
    kw = dict(source_key=KEY, detector=detector, detector_source=source, projection=projection,
              projection_source="random(0)")
    store = local_features_stage(settings, images[:3], backbone, tmp_path, **kw)
    assert len(store) == 3 and backbone.calls == 3
    opened = []
    lazy = [(i, (lambda g=g, i=i: opened.append(i) or g)) for i, g in images]
    store = local_features_stage(settings, lazy, backbone, tmp_path, **kw)
    assert len(store) == 5 and opened == ["img3", "img4"]  # stored images are not read again
    grid = backbone.extract_patches((6, 7))
    descriptors, heat = detector.detect(grid.tokens, grid.grid)
    got = store.get("img0")
    top = np.argsort(-heat.ravel(), kind="stable")[:20]
    np.testing.assert_array_equal(np.sort(got.positions), np.sort(top))
    if binarised:
        assert got.descriptors.shape == (20, 16)
        np.testing.assert_array_equal(unpack_codes(got.descriptors, 128),
                                      unpack_codes(binary_codes(descriptors[got.positions], projection), 128))
    else:
        np.testing.assert_allclose(got.descriptors.astype(np.float32), descriptors[got.positions], atol=1e-3)
    q = query_local_features(AmesSettings(query_k=600), None, None, _Whole(backbone), detector)
    assert q.shape == (42, 32) and q.dtype == np.float32  # fewer positions than query_k: all
    torch.testing.assert_close(torch.from_numpy(q).norm(dim=1), torch.ones(42), atol=1e-5, rtol=0)


class _Whole:
    def __init__(self, backbone):
        self.backbone = backbone

    def extract_patches(self, image):
        return self.backbone.extract_patches((6, 7))
