"""extract_regions with feature caches: a re-cut on cached tokens and descriptor maps
runs no network, decodes no file, and pools exactly the vectors of a network run."""

from __future__ import annotations

import functools
import json
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from claid.engine import FeatureCache, extract_regions, format_summary
from tests.engine.test_engine_extract import assert_stores_equal
from tests.engine.tiny_parts import (
    BAD,
    GOOD,
    ODD,
    TinyBackbone,
    TinyDescriptor,
    TinyTokenDescriptor,
    tiny_cutter,
)

other_cutter = functools.partial(tiny_cutter, quantile=0.75)
CONFIG_A = {"backbone": "tiny", "cutter": "median"}
CONFIG_B = {"backbone": "tiny", "cutter": "q75"}


class CountingBackbone(TinyBackbone):
    """TinyBackbone that counts the images through its forward and preprocess."""

    def __init__(self) -> None:
        super().__init__()
        self.forward_images = 0
        self.preprocessed = 0

    def preprocess(self, image):
        self.preprocessed += 1
        return super().preprocess(image)

    def forward(self, pixels):
        self.forward_images += int(pixels.shape[0])
        return super().forward(pixels)


class CountingDescriptor(TinyDescriptor):
    """TinyDescriptor that counts its forwards; ``network=False`` mimics one built
    without its network (it may only pool)."""

    def __init__(self, network: bool = True) -> None:
        super().__init__()
        self.forward_images = 0
        self.has_network = network

    def forward(self, pixels):
        if not self.has_network:
            raise AssertionError("a descriptor without its network ran a forward")
        self.forward_images += int(pixels.shape[0])
        return super().forward(pixels)


def caches(root, dtype="float32"):
    return (FeatureCache(root / "tokens", kind="tokens", key={"backbone": "tiny"}, dtype=dtype),
            FeatureCache(root / "maps", kind="feature_maps", key={"descriptor": "tiny"},
                         dtype=dtype))


def run(images, store_dir, *, backbone, cutter=other_cutter, descriptor=None,
        config=CONFIG_B, **kwargs):
    options = {"batch_size": 3, "progress": False, "dtype": "float32", **kwargs}
    return extract_regions(images, backbone=backbone, cutter=cutter,
                           descriptor=descriptor or TinyDescriptor().eval(),
                           store_dir=str(store_dir), config=config, **options)


@pytest.fixture(scope="module")
def filled(image_folder, tmp_path_factory):
    """Every image through both networks and the *median* cutter, caches filled."""
    root = tmp_path_factory.mktemp("caches")
    token_cache, map_cache = caches(root)
    run(image_folder[1], root / "store", backbone=TinyBackbone().eval(), cutter=tiny_cutter,
        config=CONFIG_A, token_cache=token_cache, map_cache=map_cache)
    return token_cache, map_cache


@pytest.fixture(scope="module")
def reference(image_folder, tmp_path_factory):
    """Every image through the networks and the *q75* cutter, no cache: what a
    re-cut must give."""
    return run(image_folder[1], tmp_path_factory.mktemp("reference"),
               backbone=TinyBackbone().eval())


def test_a_recut_on_both_caches_runs_no_network_and_decodes_no_usable_file(
        filled, reference, image_folder, tmp_path, monkeypatch):
    root, images = image_folder
    import claid.engine.datamodule as datamodule

    decoded = []
    real_load = datamodule.load_image
    monkeypatch.setattr(datamodule, "load_image", lambda path, **kw: decoded.append(path)
                        or real_load(path))
    descriptor = CountingDescriptor(network=False).eval()
    store = run(images, tmp_path, backbone=None, descriptor=descriptor,
                token_cache=filled[0], map_cache=filled[1])
    # only the files the caches recorded as skipped are opened (to be skipped again)
    assert sorted(decoded) == sorted(str(root / name) for name in BAD)
    assert_stores_equal(store, reference)
    assert dict(store.skipped) == dict(reference.skipped)  # reasons too, tiny.png included
    n_images = len(GOOD + ODD)
    assert store.summary["token_sources_rank0"] == {"backbone": 0, "cache": n_images}
    assert store.summary["map_sources_rank0"] == {"descriptor": 0, "cache": n_images}
    assert f"tokens of {n_images} images cached, 0 through the backbone" in format_summary(
        store.summary)


def test_cached_pooling_gives_the_vectors_of_the_uncached_path(image_folder, tmp_path):
    """The same images and batches, once through the networks (filling the caches) and
    once from the caches only: the stored vectors are bit-identical."""
    images = image_folder[1]
    token_cache, map_cache = caches(tmp_path)
    uncached = run(images, tmp_path / "networks", backbone=TinyBackbone().eval(),
                   token_cache=token_cache, map_cache=map_cache)
    cached = run(images, tmp_path / "caches", backbone=None,
                 descriptor=CountingDescriptor(network=False).eval(),
                 token_cache=token_cache, map_cache=map_cache)
    assert sorted(cached.image_ids) == sorted(uncached.image_ids) and len(GOOD) > 0
    for image_id in uncached.image_ids:
        a, b = uncached.regions_of(image_id), cached.regions_of(image_id)
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.vectors, b.vectors)
        np.testing.assert_array_equal(a.whole_vector, b.whole_vector)


def test_the_networks_run_only_for_what_the_caches_lack(reference, image_folder, tmp_path):
    root, images = image_folder
    token_cache, map_cache = caches(tmp_path)
    covered = GOOD[:3]
    run([(i, str(root / i)) for i in covered], tmp_path / "partial",
        backbone=TinyBackbone().eval(), cutter=tiny_cutter, config=CONFIG_A,
        token_cache=token_cache, map_cache=map_cache)
    backbone, descriptor = CountingBackbone().eval(), CountingDescriptor().eval()
    store = run(images, tmp_path / "sweep", backbone=backbone, descriptor=descriptor,
                token_cache=token_cache, map_cache=map_cache)
    computed = len(GOOD + ODD) - len(covered)
    assert backbone.forward_images == computed and descriptor.forward_images == computed
    assert_stores_equal(store, reference)
    assert store.summary["token_sources_rank0"] == {"backbone": computed, "cache": len(covered)}
    # the sweep filled the caches: every image is now cached or recorded as skipped
    ids = [i for i, _ in images]
    assert token_cache.missing(ids) == [] and map_cache.missing(ids) == []
    assert token_cache.skip_reason("empty.jpg") == dict(store.skipped)["empty.jpg"]


def test_a_missing_network_needs_a_full_cache(image_folder, tmp_path):
    root, images = image_folder
    token_cache, map_cache = caches(tmp_path)
    run([(GOOD[0], str(root / GOOD[0]))], tmp_path / "one", backbone=TinyBackbone().eval(),
        token_cache=token_cache, map_cache=map_cache)
    missing = len(images) - 1
    with pytest.raises(ValueError, match=f"backbone=None, but {missing} of the {len(images)}"):
        run(images, tmp_path / "a", backbone=None, token_cache=token_cache)
    with pytest.raises(ValueError, match="descriptor without its network"):
        run(images, tmp_path / "b", backbone=TinyBackbone().eval(),
            descriptor=CountingDescriptor(network=False), map_cache=map_cache)
    with pytest.raises(ValueError, match="needs a feature cache"):
        run(images, tmp_path / "c", backbone=None)
    with pytest.raises(ValueError, match="token_cache must be a FeatureCache of kind 'tokens'"):
        run(images, tmp_path / "d", backbone=None, token_cache=map_cache)


def test_a_token_descriptor_reads_no_map_cache_and_decodes_no_file(filled, image_folder,
                                                                   tmp_path, monkeypatch):
    root, images = image_folder
    reference = run(images, tmp_path / "reference", backbone=TinyBackbone().eval(),
                    descriptor=TinyTokenDescriptor())
    import claid.engine.datamodule as datamodule

    decoded = []
    real_load = datamodule.load_image
    monkeypatch.setattr(datamodule, "load_image", lambda path, **kw: decoded.append(path)
                        or real_load(path))
    store = run(images, tmp_path / "cached", backbone=None, descriptor=TinyTokenDescriptor(),
                token_cache=filled[0], map_cache=filled[1])
    assert sorted(decoded) == sorted(str(root / name) for name in BAD)
    assert_stores_equal(store, reference)
    for image_id in GOOD + ODD:
        np.testing.assert_array_equal(store.regions_of(image_id).vectors,
                                      reference.regions_of(image_id).vectors)


def test_a_changed_file_is_not_described_by_stale_caches(image_folder, tmp_path):
    root, _ = image_folder
    for name in ("coffee.jpg", "rocket.jpg"):
        shutil.copy(root / name, tmp_path / name)
    images = [(name, str(tmp_path / name)) for name in ("coffee.jpg", "rocket.jpg")]
    token_cache, map_cache = caches(tmp_path)
    run(images, tmp_path / "source", backbone=TinyBackbone().eval(), cutter=tiny_cutter,
        config=CONFIG_A, token_cache=token_cache, map_cache=map_cache)
    Image.open(root / "chelsea.png").save(tmp_path / "rocket.jpg")  # 72x56, was 64x48
    # with both cached nothing is decoded (the caches are trusted, as the README says);
    # once a file is decoded, a cached entry of another size is recomputed and replaced
    backbone, descriptor = CountingBackbone().eval(), CountingDescriptor().eval()
    token_cache._path("rocket.jpg").unlink()
    store = run(images, tmp_path / "fallback", backbone=backbone, descriptor=descriptor,
                token_cache=token_cache, map_cache=map_cache)
    fresh = run(images, tmp_path / "fresh", backbone=TinyBackbone().eval())
    assert backbone.forward_images == 1 and descriptor.forward_images == 1
    assert store.regions_of("rocket.jpg").image_size == (56, 72)
    np.testing.assert_array_equal(store.regions_of("rocket.jpg").vectors,
                                  fresh.regions_of("rocket.jpg").vectors)
    assert map_cache.feature_map("rocket.jpg")[2] == (56, 72)
    assert token_cache.patch_grid("rocket.jpg").image_size == (56, 72)


def test_the_cache_folder_is_keyed_versioned_and_pickles(tmp_path):
    token_cache, map_cache = caches(tmp_path, dtype="float16")
    with pytest.raises(ValueError, match="cache.json has key"):
        FeatureCache(tmp_path / "tokens", kind="tokens", key={"backbone": "other"},
                     dtype="float16")
    with pytest.raises(ValueError, match="cache.json has dtype"):
        FeatureCache(tmp_path / "tokens", kind="tokens", key={"backbone": "tiny"})
    with pytest.raises(ValueError, match="kind"):
        FeatureCache(tmp_path / "x", kind="pixels", key={})
    map_cache.set_geometry({"stride": 2})
    assert FeatureCache(tmp_path / "maps", kind="feature_maps", key={"descriptor": "tiny"},
                        dtype="float16").geometry == {"stride": 2}
    with pytest.raises(ValueError, match="geometry"):
        map_cache.set_geometry({"stride": 4})
    fmap = np.random.default_rng(0).random((3, 4, 5)).astype(np.float32)
    map_cache.put_feature_map("a/b.jpg", fmap, (2.0, 2.5), (8, 10))
    copy = pickle.loads(pickle.dumps(map_cache))
    got, scale, size = copy.feature_map("a/b.jpg")
    np.testing.assert_array_equal(got.numpy(), fmap.astype(np.float16).astype(np.float32))
    assert (scale, size) == ((2.0, 2.5), (8, 10))
    with pytest.raises(KeyError, match="no cached feature_maps"):
        copy.feature_map("c.jpg")
    with pytest.raises(ValueError, match="holds feature_maps, not tokens"):
        copy.patch_grid("a/b.jpg")
    manifest = json.loads((tmp_path / "maps" / "cache.json").read_text())
    manifest["schema_version"] = 99
    (tmp_path / "maps" / "cache.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="schema_version 99"):
        FeatureCache(tmp_path / "maps", kind="feature_maps", key={"descriptor": "tiny"},
                     dtype="float16")


@pytest.mark.slow
def test_two_ddp_ranks_read_the_caches_without_networks(filled, reference, image_folder,
                                                       tmp_path):
    """ddp_spawn pickles the datamodule into each rank: the caches travel as paths."""
    descriptor = TinyDescriptor().eval()  # importable in the spawned ranks
    descriptor.has_network = False
    store = run(image_folder[1], tmp_path, backbone=None, descriptor=descriptor,
                token_cache=filled[0], map_cache=filled[1],
                accelerator="cpu", devices=2, strategy="ddp_spawn", shard_size=2)
    assert store.summary["world_size"] == 2 and store.summary["missing"] == []
    assert_stores_equal(store, reference)
