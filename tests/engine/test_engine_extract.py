"""extract_regions end to end on tiny components: correctness, bad input, resume, reuse."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from claid.engine import extract_regions
from claid.engine.prediction_writer import StoreWriter
from claid.images import load_image
from claid.store import RegionStore, config_hash
from tests.engine.tiny_parts import BAD, GOOD, ODD, TinyBackbone, TinyDescriptor, tiny_cutter

CONFIG = {"backbone": "tiny", "cutter": "tiny", "descriptor": "tiny"}


def run(images, components, store_dir, **kwargs):
    backbone, cutter, descriptor = components
    options = {"batch_size": 3, "progress": False, "dtype": "float32", **kwargs}
    return extract_regions(images, backbone=backbone, cutter=cutter, descriptor=descriptor,
                           store_dir=str(store_dir), config=CONFIG, **options)


def reference_regions(path, components):
    """The same image through the components one at a time, no batching, no engine."""
    backbone, cutter, descriptor = components
    image = load_image(path)
    grid = backbone.extract_patches(image)
    tree = cutter(grid)
    boxes = grid.patch_boxes_to_pixels(tree.boxes)
    vectors = descriptor.describe(image, boxes, tree.masks, grid) if len(tree) else None
    return image, tree, boxes, vectors


def assert_stores_equal(a: RegionStore, b: RegionStore) -> None:
    assert sorted(a.image_ids) == sorted(b.image_ids)
    assert sorted(a.skipped) == sorted(b.skipped)
    assert a.num_regions == b.num_regions
    for image_id in a.image_ids:
        ra, rb = a.regions_of(image_id), b.regions_of(image_id)
        assert ra.image_size == rb.image_size
        np.testing.assert_array_equal(ra.boxes, rb.boxes)
        np.testing.assert_array_equal(ra.masks, rb.masks)
        np.testing.assert_array_equal(ra.depth, rb.depth)
        np.testing.assert_array_equal(ra.parent, rb.parent)
        # batch composition changes float summation order in the convolutions
        np.testing.assert_allclose(ra.vectors, rb.vectors, atol=1e-5)
        np.testing.assert_allclose(ra.whole_vector, rb.whole_vector, atol=1e-5)


@pytest.fixture(scope="module")
def full_store(image_folder, tmp_path_factory):
    components = (TinyBackbone().eval(), tiny_cutter, TinyDescriptor().eval())
    store_dir = tmp_path_factory.mktemp("full") / f"regions-{config_hash(CONFIG)}"
    return run(image_folder[1], components, store_dir)


def test_every_file_is_processed_or_skipped_with_its_reason(full_store, image_folder):
    store = full_store
    assert sorted(store.image_ids) == sorted(GOOD + ODD)
    skipped = dict(store.skipped)
    assert sorted(skipped) == sorted(BAD)
    for name, reason in BAD.items():
        assert reason in skipped[name], (name, skipped[name])
    summary = store.summary
    assert summary["images"] == len(GOOD + ODD) and summary["skipped"] == len(BAD)
    assert summary["missing"] == [] and summary["new_images"] == len(GOOD + ODD)
    assert summary["regions"] == store.num_regions > 0
    assert summary["images_without_regions"] == 1  # blank.png: processed, not skipped
    assert len(store.regions_of("blank.png")) == 0
    assert store.config == CONFIG and store.dtype == np.float32


def test_batched_engine_matches_one_image_at_a_time(full_store, image_folder, components):
    root, images = image_folder
    for image_id, path in images:
        if image_id in BAD:
            continue
        image, tree, boxes, vectors = reference_regions(path, components)
        stored = full_store.regions_of(image_id)
        assert stored.image_size == (image.height, image.width)
        np.testing.assert_array_equal(stored.masks, tree.masks)
        np.testing.assert_array_equal(stored.boxes, boxes)
        np.testing.assert_array_equal(stored.depth, tree.depth)
        np.testing.assert_array_equal(stored.parent, tree.parent)
        if vectors is not None:
            np.testing.assert_allclose(stored.vectors, vectors, atol=1e-5)
        # the whole image, pooled from the same map: what a second pass would compute
        full = np.array([[0, 0, image.width, image.height]], dtype=np.float32)
        np.testing.assert_allclose(stored.whole_vector, components[2].describe(image, full)[0], atol=1e-5)
    whole = full_store.whole_image_vectors()
    assert whole.shape == (full_store.num_images, full_store.dim)  # blank.png too (no regions)


def test_exif_rotation_reaches_the_store(full_store, image_folder):
    root, _ = image_folder
    with Image.open(root / "exif_rotated.jpg") as raw:  # the pixels as stored, unrotated
        stored_w, stored_h = raw.size
    assert tuple(full_store.regions_of("exif_rotated.jpg").image_size) == (stored_w, stored_h)
    boxes = full_store.regions_of("exif_rotated.jpg").boxes
    assert (boxes[:, 2] <= stored_h).all() and (boxes[:, 3] <= stored_w).all()


def test_resume_after_a_crash_equals_an_uninterrupted_run(
        full_store, image_folder, components, tmp_path, monkeypatch):
    real_write = StoreWriter.write_on_batch_end
    calls = {"n": 0}

    def crash_after_two_batches(self, *args, **kwargs):
        if calls["n"] == 2:
            raise RuntimeError("simulated crash in the writer")
        calls["n"] += 1
        real_write(self, *args, **kwargs)

    monkeypatch.setattr(StoreWriter, "write_on_batch_end", crash_after_two_batches)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(image_folder[1], components, tmp_path, shard_size=2)
    monkeypatch.setattr(StoreWriter, "write_on_batch_end", real_write)

    partial = RegionStore.open(tmp_path)
    done = len(partial.image_ids) + len(partial.skipped)
    assert 0 < done < len(image_folder[1])
    assert done == 6  # 2 batches x 3 images, committed in shards of 2

    resumed = run(image_folder[1], components, tmp_path, shard_size=2)
    assert len(resumed.image_ids) == len(set(resumed.image_ids))
    assert resumed.summary["already_done"] == done
    assert resumed.summary["new_images"] + resumed.summary["new_skipped"] == (
        len(image_folder[1]) - done)
    assert_stores_equal(resumed, full_store)


def test_a_finished_store_is_reused_without_work(full_store, image_folder, components,
                                                 monkeypatch):
    def no_predict(*args, **kwargs):
        raise AssertionError("a complete store must not run the models again")

    monkeypatch.setattr("pytorch_lightning.Trainer.predict", no_predict)
    store = run(image_folder[1], components, full_store.store_dir)
    assert store.summary["new_images"] == 0 and store.summary["already_done"] == len(image_folder[1])
    assert_stores_equal(store, full_store)


def test_store_of_another_config_is_refused(full_store, image_folder, components):
    backbone, cutter, descriptor = components
    with pytest.raises(ValueError, match="config_hash"):
        extract_regions(image_folder[1], backbone=backbone, cutter=cutter,
                        descriptor=descriptor, store_dir=full_store.store_dir,
                        config={**CONFIG, "tau1": 0.3}, progress=False, dtype="float32")


def test_workers_threads_tokens_and_float16(image_folder, components, tmp_path, full_store,
                                            capfd):
    """Decoding in 2 worker processes + the cutter in 2 threads gives the same store;
    float16 storage, token cache, progress bar and summary."""
    from claid.engine import FeatureCache

    token_cache = FeatureCache(tmp_path / "tokens", kind="tokens", key={"backbone": "tiny"},
                               dtype="float16")
    store = run(image_folder[1], components, tmp_path / "store", num_workers=2, cut_workers=2,
                batch_size=4, dtype="float16", token_cache=token_cache, progress=True)
    assert store.dtype == np.float16
    assert sorted(store.image_ids) == sorted(full_store.image_ids)
    np.testing.assert_allclose(store.regions_of("coffee.jpg").vectors,
                               full_store.regions_of("coffee.jpg").vectors, atol=2e-3)
    grid = token_cache.patch_grid("coffee.jpg")
    reference = components[0].extract_patches(load_image(image_folder[0] / "coffee.jpg"))
    assert grid.grid == reference.grid and grid.scale == pytest.approx(reference.scale)
    np.testing.assert_allclose(grid.tokens, reference.tokens, atol=1e-2, rtol=1e-2)
    err = capfd.readouterr()
    assert "img/s" in err.err or "s/img" in err.err  # tqdm rate in images
    total = len(image_folder[1])  # the bar also counts the batches drained at the end
    assert f"{total}/{total}" in err.err
    assert "skipped" in err.out and "empty.jpg: empty file" in err.out


def test_bad_arguments_are_errors(components, tmp_path):
    with pytest.raises(ValueError, match="unique"):
        run([("a", "/x/a.jpg"), ("a", "/x/b.jpg")], components, tmp_path)
    with pytest.raises(ValueError, match="pairs"):
        run(["a.jpg"], components, tmp_path)
    with pytest.raises(ValueError, match="dtype"):
        run([("a", "/x/a.jpg")], components, tmp_path / "s", dtype="int8")
    with pytest.raises(ValueError, match="batch_size"):
        run([("a", "/x/a.jpg")], components, tmp_path / "t", batch_size=0)


@pytest.mark.slow
def test_real_ddp_on_two_cpu_processes(full_store, image_folder, components, tmp_path):
    """Two ranks (ddp_spawn, gloo) write disjoint shards; the store equals one process's."""
    store = run(image_folder[1], components, tmp_path, accelerator="cpu", devices=2,
                strategy="ddp_spawn", shard_size=2)
    names = [p.name for p in (tmp_path / "shards").iterdir()]
    assert any("-r000-" in n for n in names) and any("-r001-" in n for n in names)
    assert store.summary["world_size"] == 2 and store.summary["missing"] == []
    assert_stores_equal(store, full_store)


def test_retry_skipped_picks_up_a_repaired_file(image_folder, components, tmp_path):
    root, _ = image_folder
    broken = tmp_path / "later.jpg"
    broken.write_bytes(b"")
    images = [("coffee.jpg", str(root / "coffee.jpg")), ("later.jpg", str(broken))]
    store = run(images, components, tmp_path / "store")
    assert store.skipped == [("later.jpg", "empty file")]
    broken.write_bytes((root / "astronaut.jpg").read_bytes())  # the file arrives
    store = run(images, components, tmp_path / "store")
    assert store.skipped == [("later.jpg", "empty file")]  # skips are not retried by default
    store = run(images, components, tmp_path / "store", retry_skipped=True)
    assert store.skipped == [] and sorted(store.image_ids) == ["coffee.jpg", "later.jpg"]


def test_descriptor_without_image_pools_the_detector_tokens(image_folder, components, tmp_path):
    from tests.engine.tiny_parts import TinyTokenDescriptor

    backbone, cutter, _ = components
    root, _ = image_folder
    images = [(name, str(root / name)) for name in ("coffee.jpg", "gray16.png", "empty.jpg")]
    store = run(images, (backbone, cutter, TinyTokenDescriptor()), tmp_path)
    assert store.dim == TinyBackbone.embed_dim and dict(store.skipped) == {
        "empty.jpg": "empty file"}
    grid = backbone.extract_patches(load_image(root / "coffee.jpg"))
    stored = store.regions_of("coffee.jpg")
    expected = np.stack([grid.tokens[m.reshape(-1)].mean(0) for m in stored.masks])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(stored.vectors, expected, atol=1e-5)


def test_an_empty_image_list_gives_an_empty_store(components, tmp_path):
    store = run([], components, tmp_path)
    assert store.num_images == 0 and store.num_regions == 0
    assert store.vectors().shape == (0, TinyDescriptor.dim) and store.boxes().shape == (0, 4)
    assert store.summary["requested"] == 0


def test_cuts_in_worker_processes_and_a_short_queue_give_the_same_store(
        full_store, image_folder, components, tmp_path):
    """Cuts in a spawned process pool, at most one batch waiting: same store; the
    summary says how many workers cut."""
    store = run(image_folder[1], components, tmp_path, cut_workers=1, cut_pool="process",
                cut_queue=1, batch_size=2)
    assert store.summary["cut_workers"] == 1 and store.summary["cut_pool"] == "process"
    assert_stores_equal(store, full_store)
