"""Damaged artifacts are caught: store shards (sizes on open, checksums on verify and
before reuse), cached arrays and index dirs; `python -m claid verify` reports them."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from claid.checksums import load_checked_npy, save_checked_npy
from claid.index.index_dir_check import index_dir_problems
from claid.store import RegionStore, RegionStoreWriter
from claid.store.integrity import drop_damaged_shards, store_content_hash, verify_store
from claid.structures import RegionDescriptors

DIM = 8
CONFIG = {"backbone": {"name": "tiny"}, "dtype": "float32"}


def _boxes(rng, n: int) -> np.ndarray:
    """(n, 4) valid boxes inside a 40x30 image (x1 < x2, y1 < y2)."""
    corner = rng.uniform(0, 15, (n, 2))
    return np.concatenate([corner, corner + rng.uniform(1, 15, (n, 2))], axis=1).astype(np.float32)


def _item(image_id: str, n: int, seed: int) -> RegionDescriptors:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return RegionDescriptors(
        image_id=image_id, image_size=(30, 40), boxes=_boxes(rng, n),
        masks=rng.random((n, 3, 4)) > 0.5, depth=np.ones(n, np.int64), parent=-np.ones(n, np.int64),
        vectors=vectors)


@pytest.fixture
def store_dir(tmp_path):
    """A store of 4 images in 2 committed shards."""
    writer = RegionStoreWriter(tmp_path / "regions-x", config=CONFIG, dim=DIM, dtype="float32",
                               shard_size=2)
    for k in range(4):
        writer.add(_item(f"{k}.jpg", 5, seed=k))
    writer.flush()
    return tmp_path / "regions-x"


def _shard(store_dir, k=0):
    return store_dir / "shards" / sorted(os.listdir(store_dir / "shards"))[k]


def _permute_rows(path):
    array = np.load(path)
    np.save(path, array[::-1].copy())  # same shape, dtype and size: only checksums tell


def test_every_shard_file_is_recorded_and_a_clean_store_verifies(store_dir):
    info = json.loads((_shard(store_dir) / "shard.json").read_text())
    assert set(info["files"]) == {"regions.npy", "vectors.npy", "masks.rle"}
    assert info["files"]["masks.rle"]["size"] == os.path.getsize(_shard(store_dir) / "masks.rle")
    check = verify_store(str(store_dir))
    assert check.ok and check.shards == 2 and check.images == 4 and check.unrecorded == []


def test_a_truncated_or_deleted_mask_file_is_caught_when_the_store_opens(store_dir):
    masks = _shard(store_dir) / "masks.rle"
    masks.write_bytes(masks.read_bytes()[:-7])
    with pytest.raises(ValueError, match="masks.rle: .* bytes, .* recorded"):
        RegionStore.open(str(store_dir))
    masks.unlink()
    with pytest.raises(ValueError, match="masks.rle: missing"):
        RegionStore.open(str(store_dir))


def test_permuted_vectors_are_caught_by_checksums_and_the_shard_is_dropped(store_dir):
    before = store_content_hash(RegionStore.open(str(store_dir)))
    _permute_rows(_shard(store_dir, 1) / "vectors.npy")
    assert RegionStore.open(str(store_dir)).num_images == 4  # sizes alone cannot tell
    check = verify_store(str(store_dir))
    (problem,) = check.damaged[_shard(store_dir, 1).name]
    assert "vectors.npy" in problem and "sha256" in problem
    assert verify_store(str(store_dir), checksums=False).ok
    name = _shard(store_dir, 1).name
    with pytest.warns(UserWarning, match="extracted again"):
        dropped = drop_damaged_shards(str(store_dir))
    assert list(dropped) == [name] and (store_dir / "damaged" / name).is_dir()
    store = RegionStore.open(str(store_dir))
    assert store.image_ids == ["0.jpg", "1.jpg"]  # the other two count as not done
    assert store_content_hash(store) != before


def test_the_content_hash_follows_content_not_the_folder(store_dir, tmp_path):
    import shutil

    copy = tmp_path / "regions-elsewhere"
    shutil.copytree(store_dir, copy)
    assert store_content_hash(RegionStore.open(str(copy))) == store_content_hash(
        RegionStore.open(str(store_dir)))


def test_a_cached_array_is_reused_only_when_its_checksum_and_inputs_match(tmp_path):
    path = tmp_path / "queries-abc.npy"
    key = {"dataset": "d", "descriptor": {"dim": 4}}
    vectors = np.eye(3, 4, dtype=np.float32)
    save_checked_npy(path, vectors, built_from=key)
    np.testing.assert_array_equal(load_checked_npy(path, built_from=key), vectors)
    with pytest.warns(UserWarning, match="other inputs"):
        assert load_checked_npy(path, built_from={**key, "dataset": "e"}) is None
    np.save(path, vectors[::-1].copy())  # other vectors of the same shape
    with pytest.warns(UserWarning, match="sha256"):
        assert load_checked_npy(path, built_from=key) is None
    (tmp_path / "queries-abc.json").unlink()
    with pytest.warns(UserWarning, match="checksum record"):
        assert load_checked_npy(path, built_from=key) is None
    assert load_checked_npy(tmp_path / "absent.npy", built_from=key) is None


def _index_dir(tmp_path):
    from claid.index import build_index
    from claid.index.search_table import RegionTable, save_search_table

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(20, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    table = RegionTable(store=None, extra_vectors=vectors, region_image=np.arange(20) % 4,
                        boxes=np.zeros((20, 4), np.float32), image_ids=list("abcd"), dim=DIM)
    index_dir = tmp_path / "index-x"
    build_index(vectors, factory="Flat").save(index_dir, provenance={}, overwrite=True)
    save_search_table(index_dir, table, descriptor={"_target_": "claid.descriptors.cnn.CNNRegionDescriptor"},
                      key={"upstream": "u"})
    return index_dir


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "index.faiss").write_bytes(b"garbage"), "index.faiss"),
    (lambda d: (d / "regions.npz").write_bytes((d / "regions.npz").read_bytes()[::-1]), "regions.npz"),
    (lambda d: (d / "search.json").write_text("{ not json"), "not valid JSON"),
    (lambda d: (d / "index.json").unlink(), "index.json: missing"),
])
def test_a_damaged_index_dir_is_reported_and_rebuilt_by_the_index_stage(tmp_path, damage, message):
    from claid.index.index_stage import IndexSettings, index_stage
    from claid.index.search_table import RegionTable

    index_dir = _index_dir(tmp_path)
    assert index_dir_problems(index_dir, key={"upstream": "u"}) == []
    assert index_dir_problems(index_dir, key={"upstream": "v"})  # built from something else
    damage(index_dir)
    problems = index_dir_problems(index_dir)
    assert problems and message in " ".join(problems)

    # the stage owning it: warns and rebuilds, then reuses the rebuilt one silently
    settings = IndexSettings(node={"_target_": "claid.index.build_index", "_partial_": True, "factory": "Flat"},
                             descriptor={"_target_": "claid.descriptors.cnn.CNNRegionDescriptor"})
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(12, DIM)).astype(np.float32)
    table = RegionTable(store=None, extra_vectors=vectors, region_image=np.arange(12) % 3,
                        boxes=np.zeros((12, 4), np.float32), image_ids=list("abc"), dim=DIM)
    cache = tmp_path / "cache"
    _, built = index_stage(settings, table, {"regions": "h"}, cache)
    damage(built)
    with pytest.warns(UserWarning, match="rebuilding index"):
        index, again = index_stage(settings, table, {"regions": "h"}, cache)
    assert again == built and index_dir_problems(built) == [] and index.ntotal == 12


def test_verify_command_on_a_good_a_truncated_and_a_permuted_store(store_dir, monkeypatch, capsys):
    from claid.__main__ import main

    def verify(*args):
        monkeypatch.setattr(sys, "argv", ["claid", "verify", *map(str, args)])
        try:
            main()
        except SystemExit as done:
            return done.code, capsys.readouterr().out
        return 0, capsys.readouterr().out

    code, out = verify(store_dir)
    assert code == 0 and out.startswith("ok: region store") and "2 shards, 4 images" in out
    _permute_rows(_shard(store_dir, 0) / "vectors.npy")
    code, out = verify(store_dir)
    assert code == 1 and "vectors.npy: content differs" in out and "1 of 2 shards damaged" in out
    assert verify("--sizes-only", store_dir)[0] == 0
    masks = _shard(store_dir, 1) / "masks.rle"
    masks.write_bytes(masks.read_bytes()[:10])
    code, out = verify(store_dir)
    assert code == 1 and "masks.rle: 10 bytes" in out and "2 of 2 shards damaged" in out
    code, _ = verify(store_dir / "shards")
    assert str(code).startswith("error: ") and "neither" in str(code)


def test_claid_search_refuses_a_damaged_index_dir_with_one_line(tmp_path, monkeypatch):
    from PIL import Image

    import claid
    from claid.__main__ import main
    from claid.artifacts import DamagedArtifactError

    index_dir = _index_dir(tmp_path)
    (index_dir / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(DamagedArtifactError, match="index.faiss: 7 bytes"):
        claid.search([Image.new("RGB", (32, 32))], index_dir=index_dir)
    Image.new("RGB", (32, 32)).save(tmp_path / "q.png")
    monkeypatch.setattr(sys, "argv", ["claid", "search", "--index-dir", str(index_dir), str(tmp_path / "q.png")])
    with pytest.raises(SystemExit) as info:
        main()
    assert str(info.value.code).startswith("error: index dir") and "damaged" in str(info.value.code)
