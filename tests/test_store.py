"""Region store: round trip, sharding, dedupe across ranks, atomic commits, versioning."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import claid.store.writer as store_writer
from claid.store import (
    RegionStore,
    RegionStoreWriter,
    compact_store,
    config_hash,
    find_token_store,
    write_summary,
)
from claid.structures import PatchGrid, RegionDescriptors

DIM = 8


def dead_pid() -> int:
    """The pid of a process that has exited (reaped)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)
CONFIG = {"backbone": {"name": "tiny"}, "cutter": {"tau1": 0.5}, "dtype": "float32"}


def make_item(image_id: str, n_regions: int, seed: int, grid=(3, 4)) -> RegionDescriptors:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n_regions, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    masks = rng.random((n_regions, *grid)) > 0.5
    boxes = rng.uniform(0, 50, size=(n_regions, 4)).astype(np.float32)
    return RegionDescriptors(
        image_id=image_id,
        image_size=(30 + seed, 40 + seed),
        boxes=boxes,
        masks=masks,
        depth=np.arange(1, n_regions + 1, dtype=np.int64),
        parent=np.arange(-1, n_regions - 1, dtype=np.int64),
        vectors=vectors,
    )


def assert_same_regions(a: RegionDescriptors, b: RegionDescriptors, atol=0.0) -> None:
    assert a.image_id == b.image_id and tuple(a.image_size) == tuple(b.image_size)
    np.testing.assert_allclose(a.vectors, b.vectors, atol=atol)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.parent, b.parent)
    np.testing.assert_array_equal(a.masks, b.masks)


def test_round_trip_across_shards(tmp_path):
    items = [make_item(f"img/{k}.jpg", n, seed=k) for k, n in enumerate([3, 0, 5, 1, 2])]
    writer = RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM, dtype="float32", shard_size=2)
    for item in items:
        writer.add(item, cell=(10.0, 10.0))
    writer.skip("bad.jpg", "empty file")
    writer.flush()
    assert len(writer.committed_shards) == 3  # 2 + 2 + (1 image + 1 skipped)

    store = RegionStore.open(tmp_path)
    assert store.schema_version == 1 and store.config == CONFIG
    assert store.image_ids == [item.image_id for item in items]
    assert store.skipped == [("bad.jpg", "empty file")]
    assert store.num_regions == 11 and store.vectors().shape == (11, DIM)
    assert store.vectors().dtype == np.float32
    np.testing.assert_array_equal(store.vectors(), np.concatenate([i.vectors for i in items]))
    np.testing.assert_array_equal(store.region_image(), np.repeat(np.arange(5), [3, 0, 5, 1, 2]))
    np.testing.assert_array_equal(store.boxes(), np.concatenate([i.boxes for i in items]))
    np.testing.assert_array_equal(store.depth(), np.concatenate([i.depth for i in items]))
    np.testing.assert_array_equal(store.parent(), np.concatenate([i.parent for i in items]))
    np.testing.assert_array_equal(store.image_sizes()[2], [32, 42])
    for item in items:
        assert_same_regions(store.regions_of(item.image_id), item)
    # global indices 3..7 are image 2's regions
    np.testing.assert_array_equal(store.masks(np.arange(3, 8)), items[2].masks)
    empty = store.regions_of("img/1.jpg")
    assert len(empty) == 0 and empty.masks.shape == (0, 3, 4)


def test_float16_storage_and_float32_view(tmp_path):
    item = make_item("a.jpg", 4, seed=1)
    writer = RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM, dtype="float16")
    writer.add(item)
    writer.flush()
    store = RegionStore.open(tmp_path)
    assert store.vectors().dtype == np.float16
    assert isinstance(store.vectors(), np.memmap)  # single shard: no copy
    np.testing.assert_allclose(store.vectors(np.float32), item.vectors, atol=1e-3)
    assert store.regions_of("a.jpg").vectors.dtype == np.float32


def test_mask_pixels_paints_patch_cells(tmp_path):
    item = make_item("a.jpg", 1, seed=0, grid=(2, 3))
    item.masks[:] = False
    item.masks[0, 1, 2] = True  # bottom-right patch
    item.image_size = (19, 31)  # cells of 10 px; the last row/column of pixels is partial
    writer = RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM)
    writer.add(item, cell=(10.0, 10.0))
    writer.flush()
    pixels = RegionStore.open(tmp_path).mask_pixels(0)
    assert pixels.shape == (19, 31)
    expected = np.zeros((19, 31), bool)
    expected[10:19, 20:30] = True
    np.testing.assert_array_equal(pixels, expected)


def test_patch_grid_cache(tmp_path):
    tokens = np.random.default_rng(0).normal(size=(12, 5)).astype(np.float32)
    grid = PatchGrid(tokens=tokens, grid=(3, 4), patch_size=8, scale=(1.5, 2.0),
                     image_size=(36, 64))
    writer = RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM)
    writer.add(make_item("a.jpg", 2, seed=0), patch_grid=grid)
    writer.add(make_item("b.jpg", 1, seed=1))
    writer.flush()
    store = RegionStore.open(tmp_path)
    cached = store.patch_grid("a.jpg")
    assert cached.grid == (3, 4) and cached.patch_size == 8 and cached.scale == (1.5, 2.0)
    np.testing.assert_allclose(cached.tokens, tokens, atol=2e-3)
    with pytest.raises(ValueError, match="keep_tokens"):
        store.patch_grid("b.jpg")


def test_two_ranks_overlapping_images_are_deduplicated(tmp_path):
    """Simulated DDP: rank 0 and rank 1 both processed "shared.jpg"."""
    rank0 = RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM, dtype="float32", rank=0)
    rank1 = RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM, dtype="float32", rank=1)
    first = make_item("shared.jpg", 2, seed=5)
    rank0.add(make_item("a.jpg", 3, seed=1))
    rank0.add(first)
    rank1.add(make_item("shared.jpg", 4, seed=6))  # a different (later) result
    rank1.add(make_item("b.jpg", 1, seed=2))
    rank0.flush()
    rank1.flush()
    store = RegionStore.open(tmp_path)
    assert sorted(store.image_ids) == ["a.jpg", "b.jpg", "shared.jpg"]
    assert len(set(store.image_ids)) == len(store.image_ids)
    assert store.num_regions == 3 + 2 + 1 == store.vectors().shape[0]
    assert_same_regions(store.regions_of("shared.jpg"), first)
    rows = store.region_image() == store.image_index("b.jpg")
    np.testing.assert_array_equal(store.vectors()[rows], make_item("b.jpg", 1, seed=2).vectors)
    assert sum(chunk.shape[0] for _, chunk in store.vector_chunks()) == 6


def test_duplicate_inside_one_shard_keeps_the_first(tmp_path):
    writer = RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM, dtype="float32")
    first = make_item("a.jpg", 2, seed=0)
    writer.add(first)
    writer.add(make_item("a.jpg", 3, seed=1))
    writer.add(make_item("b.jpg", 1, seed=2))
    writer.flush()
    store = RegionStore.open(tmp_path)
    assert store.image_ids == ["a.jpg", "b.jpg"] and store.num_regions == 3
    assert_same_regions(store.regions_of("a.jpg"), first)
    np.testing.assert_array_equal(store.vectors()[2], make_item("b.jpg", 1, seed=2).vectors[0])
    np.testing.assert_array_equal(store.masks([2]), make_item("b.jpg", 1, seed=2).masks)


def test_processed_after_skip_is_not_listed_as_skipped(tmp_path):
    writer = RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM)
    writer.skip("a.jpg", "cannot read file")
    writer.flush()
    writer.add(make_item("a.jpg", 1, seed=0))
    writer.flush()
    store = RegionStore.open(tmp_path)
    assert store.skipped == [] and store.image_ids == ["a.jpg"]


def test_crash_during_flush_leaves_nothing_readable(tmp_path, monkeypatch):
    writer = RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM)
    writer.add(make_item("a.jpg", 2, seed=0))
    writer.flush()
    writer.add(make_item("b.jpg", 2, seed=1))

    real_save = store_writer.save_npy_synced

    def dying_save(path, array):
        if path.endswith("vectors.npy"):
            with open(path, "wb") as f:
                f.write(b"\x93NUMPY half")  # a partial file, then the process dies
            raise KeyboardInterrupt("killed")
        real_save(path, array)

    monkeypatch.setattr(store_writer, "save_npy_synced", dying_save)
    with pytest.raises(KeyboardInterrupt):
        writer.flush()
    monkeypatch.setattr(store_writer, "save_npy_synced", real_save)

    (leftover,) = os.listdir(tmp_path / "staging")  # the half-written shard exists...
    store = RegionStore.open(tmp_path)  # ...but the reader never sees it
    assert store.image_ids == ["a.jpg"]
    # its writer (this process) still runs: a new writer leaves it alone...
    RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM)
    assert os.listdir(tmp_path / "staging") == [leftover]
    # ...and clears it once that process is gone
    dead = leftover.replace(f".tmp-{os.getpid()}-", f".tmp-{dead_pid()}-")
    os.rename(tmp_path / "staging" / leftover, tmp_path / "staging" / dead)
    RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM)
    assert os.listdir(tmp_path / "staging") == []


def test_damaged_committed_shard_is_an_error_not_silence(tmp_path):
    writer = RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM)
    writer.add(make_item("a.jpg", 3, seed=0))
    name = writer.flush()
    vectors = tmp_path / "shards" / name / "vectors.npy"
    vectors.write_bytes(vectors.read_bytes()[:-10])
    with pytest.raises(ValueError, match="corrupt shard"):
        RegionStore.open(tmp_path)


def test_store_refuses_other_config_and_other_schema(tmp_path):
    RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM)
    with pytest.raises(ValueError, match="config_hash"):
        RegionStoreWriter(tmp_path, config={**CONFIG, "seed": 1}, dim=DIM)
    with pytest.raises(ValueError, match="dtype"):
        RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM, dtype="float32")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="schema_version 99"):
        RegionStore.open(tmp_path)
    with pytest.raises(ValueError, match="not a claid region store"):
        RegionStore.open(tmp_path / "nowhere")


def test_writer_validates_input(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM, dtype="int8")
    writer = RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM)
    bad = make_item("a.jpg", 2, seed=0)
    bad.vectors = bad.vectors[:, :3]
    with pytest.raises(ValueError, match="dim 3"):
        writer.add(bad)


def test_summary_is_recorded(tmp_path):
    RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM)
    write_summary(tmp_path, {"images": 3})
    assert RegionStore.open(tmp_path).summary == {"images": 3}


def test_config_hash_is_stable_and_sensitive():
    a = {"x": 1, "y": {"b": [1, 2], "a": 0.5}}
    b = {"y": {"a": 0.5, "b": [1, 2]}, "x": 1}
    assert config_hash(a) == config_hash(b) and len(config_hash(a)) == 12
    assert config_hash(a) != config_hash({**a, "x": 2})
    with pytest.raises(ValueError, match="JSON"):
        config_hash({"f": object()})


def test_compaction_keeps_content_and_drops_duplicates(tmp_path):
    tokens = np.random.default_rng(0).normal(size=(12, 5)).astype(np.float32)
    grid = PatchGrid(tokens=tokens, grid=(3, 4), patch_size=8, scale=(1.0, 1.0),
                     image_size=(24, 32))
    items = [make_item(f"{k}.jpg", k % 3, seed=k) for k in range(7)]
    writer = RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM, shard_size=2)
    for item in items:
        writer.add(item, cell=(8.0, 8.0), patch_grid=grid if item.image_id == "1.jpg" else None)
    writer.skip("bad.jpg", "empty file")
    writer.add(make_item("3.jpg", 2, seed=99))  # a duplicate, dropped on read
    writer.flush()
    before = RegionStore.open(tmp_path)
    assert len(before._shards) == 5
    # read everything now: a reader opened before compaction loses its shard files
    ids, skipped, vectors = before.image_ids, before.skipped, np.array(before.vectors())
    regions = {item.image_id: before.regions_of(item.image_id) for item in items}
    tokens, mask = before.patch_grid("1.jpg").tokens, before.mask_pixels(0)

    names = compact_store(tmp_path)
    after = RegionStore.open(tmp_path)
    assert [s.name for s in after._shards] == names and len(names) == 1
    assert after.image_ids == ids and after.skipped == skipped
    np.testing.assert_array_equal(after.vectors(), vectors)
    for item in items:
        assert_same_regions(after.regions_of(item.image_id), regions[item.image_id])
    np.testing.assert_array_equal(after.patch_grid("1.jpg").tokens, tokens)
    np.testing.assert_array_equal(after.mask_pixels(0), mask)
    # shards appended later still sort after the compacted one
    writer = RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM)
    writer.add(make_item("new.jpg", 1, seed=3))
    assert writer.flush() > names[0]
    assert RegionStore.open(tmp_path).image_ids == ids + ["new.jpg"]


def _grid(seed: int, grid=(3, 4), dim=5) -> PatchGrid:
    tokens = np.random.default_rng(seed).normal(size=(grid[0] * grid[1], dim)).astype(np.float32)
    return PatchGrid(tokens=tokens * 7.3, grid=grid, patch_size=8, scale=(1.5, 2.0),
                     image_size=(36, 64))


def test_float32_token_cache_is_exact_and_survives_compaction(tmp_path):
    grids = {"a.jpg": _grid(0), "b.jpg": _grid(1)}
    writer = RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM, token_dtype="float32",
                               shard_size=1)
    writer.add(make_item("a.jpg", 2, seed=0), patch_grid=grids["a.jpg"])
    writer.add(make_item("c.jpg", 1, seed=2))
    writer.flush()
    writer = RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM)  # float16 tokens
    writer.add(make_item("b.jpg", 1, seed=1), patch_grid=grids["b.jpg"])
    writer.flush()
    store = RegionStore.open(tmp_path)
    assert store.token_image_ids() == ["a.jpg", "b.jpg"]
    assert store.has_tokens("a.jpg") and not store.has_tokens("c.jpg")
    assert not store.has_tokens("never-seen.jpg")
    assert [store.token_dtype(i) for i in ("a.jpg", "b.jpg")] == ["float32", "float16"]
    np.testing.assert_array_equal(store.patch_grid("a.jpg").tokens, grids["a.jpg"].tokens)
    rounded = store.patch_grid("b.jpg").tokens
    assert not np.array_equal(rounded, grids["b.jpg"].tokens)
    np.testing.assert_allclose(rounded, grids["b.jpg"].tokens, rtol=1e-3)

    compact_store(tmp_path)  # mixed dtypes: compacted as float32, nothing is lost
    after = RegionStore.open(tmp_path)
    np.testing.assert_array_equal(after.patch_grid("a.jpg").tokens, grids["a.jpg"].tokens)
    np.testing.assert_array_equal(after.patch_grid("b.jpg").tokens, rounded)
    with pytest.raises(ValueError, match="token_dtype"):
        RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM, token_dtype="bfloat16")


def _token_store(cache_dir, name: str, config: dict, token_ids, other_ids=()) -> str:
    store_dir = cache_dir / f"regions-{name}"
    writer = RegionStoreWriter(store_dir, config=config, dim=DIM)
    for k, image_id in enumerate(token_ids):
        writer.add(make_item(image_id, 1, seed=k), patch_grid=_grid(k))
    for k, image_id in enumerate(other_ids):
        writer.add(make_item(image_id, 1, seed=k))
    writer.flush()
    return str(store_dir)


def test_find_token_store_matches_config_and_prefers_the_widest_cover(tmp_path):
    dataset = {"name": "synthetic", "images": "abc123"}
    backbone = {"name": "tiny", "size": [224, 224]}
    same = {"dataset": dataset, "backbone": backbone}
    small = _token_store(tmp_path, "small", {**same, "cutter": {"tau2": 0.1}}, ["x.jpg", "y.jpg"])
    wide = _token_store(tmp_path, "wide", {**same, "cutter": {"tau2": 0.2}},
                        ["a.jpg", "b.jpg", "c.jpg"])
    # more images, but no tokens; and another backbone with even more tokens
    _token_store(tmp_path, "plain", {**same, "cutter": {"tau2": 0.3}}, [],
                 ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"])
    _token_store(tmp_path, "other", {"dataset": dataset, "backbone": {**backbone, "size": [448]}},
                 ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    (tmp_path / "regions-broken").mkdir()
    (tmp_path / "regions-broken" / "manifest.json").write_text("{not json")
    (tmp_path / "index-zzz").mkdir()  # not a region store: never looked at

    with pytest.warns(UserWarning, match="regions-broken"):
        found = find_token_store(str(tmp_path), same)
    assert found.store_dir == wide and found.has_tokens("a.jpg")
    # a tuple in the match equals the list the manifest holds
    tuple_match = {"dataset": dataset, "backbone": {"name": "tiny", "size": (224, 224)}}
    with pytest.warns(UserWarning):
        assert find_token_store(str(tmp_path), tuple_match).store_dir == wide
    # ranked by cover of the images asked for
    with pytest.warns(UserWarning):
        assert find_token_store(str(tmp_path), same, image_ids=["x.jpg", "a.jpg", "y.jpg"]
                                ).store_dir == small
        assert find_token_store(str(tmp_path), same, exclude=[wide]).store_dir == small
        assert find_token_store(str(tmp_path), same, image_ids=["d.jpg", "e.jpg"]) is None
        # a subset of the backbone config is not a match: whole values are compared
        assert find_token_store(str(tmp_path), {"backbone": {"name": "tiny"}}) is None
        assert find_token_store(str(tmp_path), {**same, "dtype": "float16"}) is None
    assert find_token_store(str(tmp_path / "nowhere"), same) is None
    with pytest.raises(ValueError, match="non-empty dict"):
        find_token_store(str(tmp_path), {})


def _with_whole(item: RegionDescriptors, seed: int) -> RegionDescriptors:
    from dataclasses import replace

    whole = np.random.default_rng(1000 + seed).normal(size=DIM).astype(np.float32)
    return replace(item, whole_vector=whole / np.linalg.norm(whole))


def test_whole_image_vectors_round_trip_dedupe_and_compaction(tmp_path):
    items = [_with_whole(make_item(f"img/{k}.jpg", n, seed=k), k) for k, n in enumerate([2, 0, 3])]
    writer = RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM, dtype="float16", shard_size=2)
    for item in items:
        writer.add(item)
    writer.skip("bad.jpg", "empty file")
    writer.flush()
    other = RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM, dtype="float16", rank=1)
    other.add(_with_whole(make_item("img/0.jpg", 1, seed=99), 99))  # a duplicate: ignored
    other.flush()
    store = RegionStore.open(tmp_path)
    expected = np.stack([item.whole_vector for item in items])
    whole = store.whole_image_vectors(np.float32)
    assert whole.shape == (3, DIM) and store.whole_image_vectors().dtype == np.float16
    np.testing.assert_allclose(whole, expected, atol=1e-3)  # float16 storage
    np.testing.assert_allclose(store.regions_of("img/2.jpg").whole_vector, expected[2], atol=1e-3)
    rows = store.whole_image_rows()  # the same rows, read shard by shard (duplicate skipped)
    assert rows.shape == (3, DIM) and len(rows) == 3 and rows.dtype == np.float16
    chunks = list(rows.chunks())
    assert [start for start, _ in chunks] == [0, 2, 3]
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), store.whole_image_vectors())
    np.testing.assert_array_equal(np.asarray(rows), store.whole_image_vectors())
    compact_store(tmp_path)
    np.testing.assert_array_equal(RegionStore.open(tmp_path).whole_image_vectors(), store.whole_image_vectors())


def test_a_shard_without_whole_image_vectors_makes_the_store_say_none(tmp_path):
    writer = RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM, dtype="float32", shard_size=1)
    writer.add(_with_whole(make_item("a.jpg", 1, seed=1), 1))
    writer.add(make_item("b.jpg", 1, seed=2))  # e.g. written by an older claid
    writer.flush()
    store = RegionStore.open(tmp_path)
    assert store.whole_image_vectors() is None and store.whole_image_rows() is None
    assert store.regions_of("a.jpg").whole_vector is not None and store.regions_of("b.jpg").whole_vector is None


def test_whole_vector_of_the_wrong_length_is_refused_and_damage_detected(tmp_path):
    from dataclasses import replace

    writer = RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM, dtype="float32")
    with pytest.raises(ValueError, match="whole_vector"):
        writer.add(replace(make_item("a.jpg", 1, seed=1), whole_vector=np.ones(DIM + 1)))
    writer.add(_with_whole(make_item("a.jpg", 1, seed=1), 1))
    name = writer.flush()
    np.save(tmp_path / "shards" / name / "whole.npy", np.zeros((2, DIM), np.float32))
    with pytest.raises(ValueError, match="whole.npy"):
        RegionStore.open(tmp_path)


@pytest.mark.parametrize("error", [PermissionError, OSError])
def test_a_store_is_created_on_a_filesystem_without_hard_links(tmp_path, monkeypatch, error):
    from claid.store import ensure_store

    def no_links(src, dst):
        raise error(1, "hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    writer = RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM)
    writer.add(make_item("a.jpg", 2, seed=0))
    writer.flush()
    ensure_store(tmp_path, config=CONFIG, dim=DIM)  # the existing manifest is checked, kept
    assert RegionStore.open(tmp_path).image_ids == ["a.jpg"]
    assert [n for n in os.listdir(tmp_path) if ".tmp-" in n] == []
    with pytest.raises(ValueError, match="config_hash"):
        ensure_store(tmp_path, config={"other": 1}, dim=DIM)


def test_damaged_manifest_is_one_corrupt_artifact_error_naming_it(tmp_path):
    from claid.artifacts import DamagedArtifactError

    RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM)
    manifest = tmp_path / "manifest.json"
    for damage in (b'{"format": "claid-regi', b"\xff\xfe garbage", b"[1, 2]"):
        manifest.write_bytes(damage)
        with pytest.raises(DamagedArtifactError, match=f"^{manifest}: damaged"):
            RegionStore.open(tmp_path)
