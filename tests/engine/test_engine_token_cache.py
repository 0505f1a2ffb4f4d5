"""extract_regions(tokens_from=...): a cutter-only run on cached PatchGrids equals a
backbone run, never calls the backbone, and falls back where tokens are missing."""

from __future__ import annotations

import functools
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from claid.engine import CachedTokens, extract_regions, format_summary
from claid.store import RegionStore
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


def run(images, store_dir, *, backbone, cutter=other_cutter, descriptor=None,
        config=CONFIG_B, **kwargs):
    options = {"batch_size": 3, "progress": False, "dtype": "float32", **kwargs}
    return extract_regions(images, backbone=backbone, cutter=cutter,
                           descriptor=descriptor or TinyDescriptor().eval(),
                           store_dir=str(store_dir), config=config, **options)


@pytest.fixture(scope="module")
def token_store(image_folder, tmp_path_factory):
    """Every image through the backbone and the *median* cutter, tokens kept as float32."""
    return run(image_folder[1], tmp_path_factory.mktemp("tokens"), backbone=TinyBackbone().eval(),
               cutter=tiny_cutter, config=CONFIG_A, keep_tokens=True, token_dtype="float32")


@pytest.fixture(scope="module")
def reference(image_folder, tmp_path_factory):
    """Every image through the backbone and the *q75* cutter: what a cached run must give."""
    return run(image_folder[1], tmp_path_factory.mktemp("reference"),
               backbone=TinyBackbone().eval())


def test_cutter_only_run_on_cached_tokens_equals_a_backbone_run(token_store, reference,
                                                                image_folder, tmp_path):
    store = run(image_folder[1], tmp_path, backbone=None, tokens_from=token_store)
    assert_stores_equal(store, reference)
    assert dict(store.skipped) == dict(reference.skipped)  # reasons too, tiny.png included
    # the cutter really changed: the token store's regions are not these
    assert any(token_store.regions_of(i).masks.sum() != store.regions_of(i).masks.sum()
               for i in GOOD)
    n_images = len(GOOD + ODD)
    assert store.summary["tokens_from"] == {"store": token_store.store_dir, "cached": n_images}
    assert store.summary["token_sources_rank0"] == {"backbone": 0, "cache": n_images}
    assert f"tokens: {n_images} images from the cache" in format_summary(store.summary)


def test_the_backbone_is_never_run_for_cached_images(token_store, reference, image_folder,
                                                     tmp_path):
    backbone = CountingBackbone().eval()
    store = run(image_folder[1], tmp_path, backbone=backbone, tokens_from=token_store,
                keep_tokens=True, token_dtype="float32", num_workers=2)
    assert backbone.forward_images == 0
    assert_stores_equal(store, reference)
    # the new store caches the same tokens again, bit for bit
    for image_id in GOOD + ODD:
        cached, again = token_store.patch_grid(image_id), store.patch_grid(image_id)
        np.testing.assert_array_equal(again.tokens, cached.tokens)
        assert (again.grid, again.patch_size, again.scale, again.image_size) == (
            cached.grid, cached.patch_size, cached.scale, cached.image_size)


def test_partial_token_coverage_falls_back_to_the_backbone(reference, image_folder, tmp_path):
    root, images = image_folder
    covered = GOOD[:3]
    partial = run([(i, str(root / i)) for i in covered], tmp_path / "partial",
                  backbone=TinyBackbone().eval(), cutter=tiny_cutter, config=CONFIG_A,
                  keep_tokens=True, token_dtype="float32")
    backbone = CountingBackbone().eval()
    store = run(images, tmp_path / "sweep", backbone=backbone, tokens_from=partial)
    assert backbone.forward_images == len(GOOD + ODD) - len(covered)
    assert backbone.preprocessed == len(images) - len(BAD) - len(covered) + 1  # + tiny.png
    assert_stores_equal(store, reference)
    assert store.summary["token_sources_rank0"] == {
        "backbone": len(GOOD + ODD) - len(covered), "cache": len(covered)}
    missing = len(images) - len(covered)
    with pytest.raises(ValueError, match=f"{missing} of the {len(images)} images to do have no"):
        run(images, tmp_path / "no-backbone", backbone=None, tokens_from=partial)


def test_a_token_descriptor_on_cached_tokens_decodes_no_file(token_store, image_folder,
                                                             tmp_path, monkeypatch):
    root, images = image_folder
    reference = run(images, tmp_path / "reference", backbone=TinyBackbone().eval(),
                    descriptor=TinyTokenDescriptor())
    import claid.engine.datamodule as datamodule

    decoded = []
    real_load = datamodule.load_image
    monkeypatch.setattr(datamodule, "load_image", lambda path, **kwargs: decoded.append(path)
                        or real_load(path, **kwargs))
    store = run(images, tmp_path / "cached", backbone=None, descriptor=TinyTokenDescriptor(),
                tokens_from=token_store)
    # only the files the token store skipped are opened (to be skipped again)
    assert sorted(decoded) == sorted(str(root / name) for name in BAD)
    assert_stores_equal(store, reference)
    for image_id in GOOD + ODD:
        np.testing.assert_array_equal(store.regions_of(image_id).vectors,
                                      reference.regions_of(image_id).vectors)


def test_a_changed_file_is_not_described_by_stale_tokens(image_folder, tmp_path):
    root, _ = image_folder
    for name in ("coffee.jpg", "rocket.jpg"):
        shutil.copy(root / name, tmp_path / name)
    images = [(name, str(tmp_path / name)) for name in ("coffee.jpg", "rocket.jpg")]
    source = run(images, tmp_path / "source", backbone=TinyBackbone().eval(), cutter=tiny_cutter,
                 config=CONFIG_A, keep_tokens=True)
    Image.open(root / "chelsea.png").save(tmp_path / "rocket.jpg")  # 72x56, was 64x48

    backbone = CountingBackbone().eval()
    store = run(images, tmp_path / "fallback", backbone=backbone, tokens_from=source)
    fresh = run(images, tmp_path / "fresh", backbone=TinyBackbone().eval())
    assert backbone.forward_images == 1
    assert store.regions_of("rocket.jpg").image_size == (56, 72)
    np.testing.assert_array_equal(store.regions_of("rocket.jpg").masks,
                                  fresh.regions_of("rocket.jpg").masks)

    store = run(images, tmp_path / "no-backbone", backbone=None, tokens_from=source)
    assert store.image_ids == ["coffee.jpg"]
    (image_id, reason), = store.skipped
    assert image_id == "rocket.jpg" and "cached tokens are of a 48x64 image" in reason


def test_tokens_of_another_backbone_are_refused(token_store, image_folder, tmp_path):
    backbone = TinyBackbone().eval()
    backbone.patch_size = 16
    with pytest.raises(ValueError, match="another backbone"):
        run(image_folder[1], tmp_path, backbone=backbone, tokens_from=token_store)
    with pytest.raises(ValueError, match="RegionStore"):
        run(image_folder[1], tmp_path / "b", backbone=None, tokens_from=token_store.store_dir)
    with pytest.raises(ValueError, match="tokens_from"):
        run(image_folder[1], tmp_path / "c", backbone=None)
    with pytest.raises(ValueError, match="token_dtype"):
        run(image_folder[1], tmp_path / "d", backbone=TinyBackbone(), token_dtype="int8")


def test_cached_tokens_travel_to_workers_without_the_open_store(token_store):
    cached = CachedTokens(token_store, ["coffee.jpg", "empty.jpg", "not-there.jpg"])
    assert cached.image_ids == {"coffee.jpg"} and cached.skipped == {"empty.jpg": "empty file"}
    copy = pickle.loads(pickle.dumps(cached))
    assert copy._store is None  # reopened on first use, in the worker
    np.testing.assert_array_equal(copy.patch_grid("coffee.jpg").tokens,
                                  token_store.patch_grid("coffee.jpg").tokens)
    with pytest.raises(KeyError, match="no cached tokens"):
        copy.patch_grid("empty.jpg")
    assert isinstance(copy._store, RegionStore)


@pytest.mark.slow
def test_two_ddp_ranks_read_the_cache_without_a_backbone(token_store, reference, image_folder,
                                                         tmp_path):
    """ddp_spawn pickles the datamodule into each rank: the cache must reopen there."""
    store = run(image_folder[1], tmp_path, backbone=None, tokens_from=token_store,
                accelerator="cpu", devices=2, strategy="ddp_spawn", shard_size=2)
    assert store.summary["world_size"] == 2 and store.summary["missing"] == []
    assert_stores_equal(store, reference)
