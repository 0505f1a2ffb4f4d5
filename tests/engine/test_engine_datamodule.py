"""Rank slicing, bucketing, shape-grouped collation, and two simulated DDP ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from claid.engine.datamodule import (
    ImageListDataModule,
    ImageListDataset,
    bucket_order,
    collate_images,
    rank_slice,
)
from claid.engine.module import ExtractionModule
from claid.store import RegionStore, RegionStoreWriter
from tests.engine.tiny_parts import BAD


@pytest.mark.parametrize("n, world", [(0, 2), (7, 1), (7, 2), (10, 3), (2, 4)])
def test_rank_slices_are_disjoint_and_cover_everything(n, world):
    slices = [rank_slice(n, rank, world) for rank in range(world)]
    flat = [i for s in slices for i in s]
    assert sorted(flat) == list(range(n))
    assert max(map(len, slices)) - min(map(len, slices)) <= 1


def test_rank_slice_rejects_bad_rank():
    with pytest.raises(ValueError, match="rank"):
        rank_slice(5, 2, 2)


def test_bucket_order_puts_equal_shapes_together():
    sizes = [(48, 64), (64, 48), None, (48, 64), (100, 40), (64, 48)]
    order = bucket_order(sizes)
    assert sorted(order) == list(range(len(sizes)))
    shapes = [sizes[i] for i in order]
    assert shapes[-1] is None
    # each shape occupies one contiguous run
    runs = [s for k, s in enumerate(shapes) if k == 0 or s != shapes[k - 1]]
    assert len(runs) == len(set(runs))


def test_dataset_reports_bad_files_and_collate_groups_shapes(image_folder, components):
    backbone, _, descriptor = components
    _, images = image_folder
    dataset = ImageListDataset(images, backbone=backbone, descriptor=descriptor)
    items = [dataset[i] for i in range(len(dataset))]
    errors = {item["id"]: item["error"] for item in items if item["error"]}
    assert sorted(errors) == sorted(BAD)
    batch = collate_images(items)
    assert [s[0] for s in batch["skipped"]] == [i for i, _ in images if i in BAD]
    for key in ("backbone_groups", "descriptor_groups"):
        positions = sorted(p for group, _ in batch[key] for p in group)
        assert positions == list(range(len(batch["ids"])))
        for group, stacked in batch[key]:
            assert stacked.shape[0] == len(group)
            for k, p in enumerate(group):  # the stacked rows are the items' own tensors
                item = next(i for i in items if i["id"] == batch["ids"][p])
                pixels = item["backbone_pixels" if key == "backbone_groups"
                              else "descriptor_pixels"]
                assert torch.equal(stacked[k], pixels)
    assert len(batch["backbone_groups"]) > 1  # the folder has several aspect ratios


def _extract_as_rank(images, components, store_dir, rank, world, config):
    """What one DDP rank does, without a process group: its slice -> batches ->
    predict_step -> its own shard writer."""
    backbone, cutter, descriptor = components
    datamodule = ImageListDataModule(images, backbone=backbone, descriptor=descriptor,
                                     batch_size=3)
    mine = datamodule.images_for_rank(rank, world)
    dataset = ImageListDataset(mine, backbone=backbone, descriptor=descriptor)
    module = ExtractionModule(backbone=backbone, cutter=cutter, descriptor=descriptor)
    writer = RegionStoreWriter(store_dir, config=config, dim=descriptor.dim, dtype="float32",
                               rank=rank, shard_size=2)
    module.on_predict_start()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(dataset), 3):
            batch = collate_images([dataset[i] for i in range(start, min(start + 3, len(dataset)))])
            outputs.append(module.predict_step(batch, start // 3))
        outputs.append(module.drain_pending())  # steps return batches once cut
    module.on_predict_end()
    for output in outputs:
        for item, cell in zip(output["regions"], output["cells"]):
            writer.add(item, cell=cell)
        for image_id, reason in output["skipped"]:
            writer.skip(image_id, reason)
    writer.flush()
    return [image_id for image_id, _ in mine]


def test_two_ranks_write_every_image_exactly_once(image_folder, components, tmp_path):
    _, images = image_folder
    config = {"test": "ddp"}
    seen_by = [_extract_as_rank(images, components, tmp_path / "ddp", r, 2, config)
               for r in range(2)]
    assert not set(seen_by[0]) & set(seen_by[1])
    two_ranks = RegionStore.open(tmp_path / "ddp")
    names = sorted(p.name for p in (tmp_path / "ddp" / "shards").iterdir())
    assert any("-r000-" in n for n in names) and any("-r001-" in n for n in names)

    _extract_as_rank(images, components, tmp_path / "one", 0, 1, config)
    one_rank = RegionStore.open(tmp_path / "one")
    assert sorted(two_ranks.image_ids) == sorted(one_rank.image_ids)
    assert len(set(two_ranks.image_ids)) == len(two_ranks.image_ids)
    assert sorted(two_ranks.skipped) == sorted(one_rank.skipped)
    for image_id in one_rank.image_ids:
        a, b = two_ranks.regions_of(image_id), one_rank.regions_of(image_id)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-5)


def test_workers_decode_a_large_photo_at_the_size_the_networks_use(tmp_path, monkeypatch):
    from PIL import Image
    from skimage import data as skdata

    import claid.engine.datamodule as datamodule
    from claid.backbones.timm_vit import TimmViTBackbone
    from claid.descriptors.cnn import CNNRegionDescriptor

    photo = tmp_path / "big.jpg"
    Image.fromarray(skdata.astronaut()).resize((4000, 3000)).save(photo, quality=90)
    seen = {}
    real_load = datamodule.load_image

    def spying_load(path, **kwargs):
        image = real_load(path, **kwargs)
        seen["decoded"] = image.size
        return image

    monkeypatch.setattr(datamodule, "load_image", spying_load)
    # the real resize policies, without building the networks
    backbone = TimmViTBackbone.__new__(TimmViTBackbone)
    backbone.__dict__.update(short_side=360, max_long_side=800, native_below=356, patch_size=16,
                             mean=(0.5,) * 3, std=(0.5,) * 3, grid_fit="crop", square_size=None,
                             resample="bilinear")
    descriptor = CNNRegionDescriptor.__new__(CNNRegionDescriptor)
    descriptor.__dict__.update(max_long_side=1024, stride=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert datamodule.long_side_used([backbone, descriptor], 3000, 4000) == 1024
    assert datamodule.long_side_used([backbone, object()], 3000, 4000) is None  # unknown: full
    item = datamodule.ImageListDataset([("big.jpg", str(photo))], backbone=backbone,
                                       descriptor=descriptor)[0]
    assert item["error"] is None
    assert seen["decoded"] == (2000, 1500)  # JPEG 1/2 scale: 1/4 would be below 1024 px
    assert item["image_size"] == (3000, 4000)  # sizes and scales stay in file pixels
    assert tuple(item["backbone_pixels"].shape) == (3, 352, 480)
    assert item["backbone_scale"] == (3000 / 360, 4000 / 480)
    assert tuple(item["descriptor_pixels"].shape) == (3, 768, 1024)
    assert item["descriptor_scale"] == (3000 / 768, 4000 / 1024)
