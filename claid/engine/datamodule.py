"""Image lists -> batches of network inputs, decoded and preprocessed in DataLoader workers.

Why the pieces look the way they do:
- Decoding and resizing run in ``Dataset.__getitem__``, i.e. in the DataLoader's
  worker processes, so on a GPU machine they overlap the forward passes.
- Images keep their aspect ratio, so network inputs differ in size. The images of
  each rank are ordered by header size (bucketing), which puts same-shaped inputs
  in the same batch; ``collate`` then stacks each group of equal shapes into one
  tensor, so a batch that still mixes shapes costs one forward per shape and is
  never padded (padding would change ViT tokens).
- The list of images to do is decided once, on global rank 0, after the ranks
  have started (``todo``: a fresh listing of the store there), and broadcast, so
  a stale listing on another rank (NFS) cannot make two ranks disagree.
- Ranks get disjoint strided slices of that list (``rank_slice``; Lightning's
  distributed sampler is off). The split is ours so that each rank can then order
  its own share by image shape (bucketing, above) and so that a rank's share is
  known without a process group (the tests simulate ranks with it). A rank whose
  slice is empty (fewer images left than ranks) gets one placeholder item that
  collates to an empty batch, so it still runs the loop and reaches the store
  barrier.
- A file that cannot be used travels through the batch as ``(image_id, reason)``
  so the writer records it as skipped; the run goes on.
- The workers call ``backbone.preprocess`` / ``descriptor.preprocess`` on the
  modules themselves (shared copy-on-write with the forked workers). Those
  methods must therefore stay CPU-only and not touch parameters or buffers: on a
  GPU run the modules already live on the device when the workers start.
- With feature caches (:class:`claid.engine.feature_cache.FeatureCache`) the workers
  read a cached image's PatchGrid and descriptor map instead of preparing network
  input; when both are cached (or the descriptor needs no image), the file is not
  even decoded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from claid.engine.cut_pool import decode_workers
from claid.engine.feature_cache import FeatureCache
from claid.images import (
    DEFAULT_DECODE,
    DecodeOptions,
    ImageError,
    image_size_from_header,
    load_image,
    original_size,
)

__all__ = ["ImageListDataset", "ImageListDataModule", "collate_images", "rank_slice",
           "bucket_order"]


def rank_slice(n_items: int, rank: int, world_size: int) -> list[int]:
    """Indices of the items rank ``rank`` of ``world_size`` processes handles:
    ``rank, rank + W, ...``. Slices of different ranks are disjoint and together
    cover every item exactly once (ranks may differ by one item; with fewer items
    than ranks some slices are empty)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
    return list(range(rank, n_items, world_size))


def bucket_order(sizes: Sequence[tuple[int, int] | None]) -> list[int]:
    """Order images so that equal (then similar) shapes are adjacent.

    Args:
        sizes: (height, width) per image from the file header, None if unreadable.
    Returns:
        A permutation of ``range(len(sizes))``: sorted by aspect ratio, then size;
        unreadable headers last (they are reported as skipped when decoded).
    """

    def key(i: int):
        size = sizes[i]
        if size is None:
            return (1, 0.0, 0, 0, i)
        height, width = size
        return (0, round(width / max(height, 1), 3), height, width, i)

    return sorted(range(len(sizes)), key=key)


def long_side_used(modules: Sequence, height: int, width: int) -> int | None:
    """The longest side any of ``modules`` resizes a (height, width) image to, from
    their ``input_size(height, width)``; None (decode in full) when one of them does
    not say, or when no module needs the pixels."""
    sides = []
    for module in modules:
        input_size = getattr(module, "input_size", None)
        if input_size is None:
            return None
        sides.append(max(input_size(height, width)))
    return max(sides) if sides else None


class ImageListDataset(Dataset):
    """``[(image_id, path)]`` -> one dict per image with both networks' inputs.

    Each item is ``{"id", "error"}`` plus, when ``error`` is None,
    ``"image_size"`` (H, W original pixels), ``"patch_grid"`` (the cached PatchGrid,
    else None), ``"backbone_pixels"`` (3, h, w) (None when the PatchGrid is cached),
    ``"backbone_scale"`` (sy, sx), ``"feature_map"`` (the cached (C, h', w')
    descriptor map, else None), ``"descriptor_pixels"`` (3, h', w') (None when the
    map is cached or the descriptor needs no image) and ``"descriptor_scale"``.
    An image whose outputs are all cached is not decoded.

    Args:
        images: (image_id, path) pairs.
        backbone: prepares backbone input; None when ``token_cache`` holds every
            image that decodes (an image without tokens is then skipped).
        descriptor: prepares descriptor input when ``descriptor.needs_image``;
            ``descriptor.has_network`` False: it can only pool cached maps.
        token_cache: cached PatchGrids (``FeatureCache`` of kind tokens), or None.
        map_cache: cached descriptor maps (kind feature_maps), or None.
        decode: how the files are decoded (:class:`claid.images.DecodeOptions`).
    """

    def __init__(self, images: Sequence[tuple[str, str]], *, backbone, descriptor,
                 token_cache: FeatureCache | None = None,
                 map_cache: FeatureCache | None = None,
                 decode: DecodeOptions = DEFAULT_DECODE) -> None:
        self.images = list(images)
        self.decode = decode
        self.backbone = backbone
        self.descriptor = descriptor
        self.token_cache = token_cache
        self.map_cache = map_cache

    def __len__(self) -> int:
        return len(self.images)

    def _skip_reason(self, image_id: str, missing: str) -> str:
        """The reason a cache recorded for an image it could not use (the same
        network on the same file fails the same way), else ``missing``."""
        for cache in (self.token_cache, self.map_cache):
            reason = cache.skip_reason(image_id) if cache is not None else None
            if reason:
                return reason
        return missing

    def __getitem__(self, index: int) -> dict:
        image_id, path = self.images[index]
        needs_map = self.descriptor.needs_image
        patch_grid = None
        if self.token_cache is not None and self.token_cache.has(image_id):
            patch_grid = self.token_cache.patch_grid(image_id)
        cached_map = None
        if needs_map and self.map_cache is not None and self.map_cache.has(image_id):
            cached_map = self.map_cache.feature_map(image_id)
        if patch_grid is not None and (cached_map is not None or not needs_map):
            # nothing needs the pixels: skip decoding altogether
            if cached_map is not None and tuple(cached_map[2]) != tuple(patch_grid.image_size):
                return {"id": image_id, "error": "cached tokens and feature map disagree on the "
                        "image size; delete the caches' entries to recompute them"}
            return {"id": image_id, "error": None, "image_size": tuple(patch_grid.image_size),
                    "patch_grid": patch_grid, "backbone_pixels": None,
                    "backbone_scale": tuple(patch_grid.scale),
                    "feature_map": None if cached_map is None else cached_map[0],
                    "descriptor_pixels": None,
                    "descriptor_scale": (1.0, 1.0) if cached_map is None else cached_map[1]}
        users = [m for m in (None if patch_grid is not None else self.backbone,
                             self.descriptor if needs_map and cached_map is None else None) if m]
        try:  # decoded no larger than the networks use it (a 12 MP photo stays small)
            image = load_image(path, long_side_needed=lambda h, w: long_side_used(users, h, w),
                               options=self.decode)
        except ImageError as err:
            return {"id": image_id, "error": err.reason}
        size = original_size(image)
        # the file changed since it was cached: the cache describes another image
        if patch_grid is not None and tuple(patch_grid.image_size) != size:
            patch_grid = None
        if cached_map is not None and tuple(cached_map[2]) != size:
            cached_map = None
        needed = [m for m in (self.backbone if patch_grid is None else None,
                              self.descriptor if needs_map and cached_map is None else None) if m]
        if any(m not in users for m in needed):  # a stale cache entry: decode for its network too
            try:
                image = load_image(path, long_side_needed=lambda h, w: long_side_used(needed, h, w),
                                   options=self.decode)
            except ImageError as err:
                return {"id": image_id, "error": err.reason}
        if patch_grid is None and self.backbone is None:
            return {"id": image_id, "error": self._skip_reason(
                image_id, "no cached tokens (or cached for a file of another size) and no "
                "backbone; re-extract with the backbone")}
        if needs_map and cached_map is None and not getattr(self.descriptor, "has_network", True):
            return {"id": image_id, "error": self._skip_reason(
                image_id, "no cached feature map (or cached for a file of another size) and "
                "no descriptor network; re-extract with the descriptor's network")}
        try:
            backbone_pixels, backbone_scale = None, None
            if patch_grid is None:
                backbone_pixels, backbone_scale = self.backbone.preprocess(image)
            else:
                backbone_scale = patch_grid.scale
            descriptor_pixels, descriptor_scale = None, (1.0, 1.0)
            if cached_map is not None:
                descriptor_scale = cached_map[1]
            elif needs_map:
                descriptor_pixels, descriptor_scale = self.descriptor.preprocess(image)
        except ValueError as err:
            # e.g. an image too small for one patch; recorded, not fatal
            return {"id": image_id, "error": f"preprocessing failed: {err}"}
        if backbone_pixels is not None:
            patch = self.backbone.patch_size
            if backbone_pixels.shape[-2] < patch or backbone_pixels.shape[-1] < patch:
                return {"id": image_id, "error": f"image smaller than one {patch}-px patch "
                        f"after preprocessing ({image.height}x{image.width})"}
        return {
            "id": image_id,
            "error": None,
            "image_size": size,
            "patch_grid": patch_grid,
            "backbone_pixels": backbone_pixels,
            "backbone_scale": tuple(float(v) for v in backbone_scale),
            "feature_map": None if cached_map is None else cached_map[0],
            "descriptor_pixels": descriptor_pixels,
            "descriptor_scale": tuple(float(v) for v in descriptor_scale),
        }


def _stack_by_shape(tensors: list[torch.Tensor | None]) -> list[tuple[list[int], torch.Tensor]]:
    """Group equal-shaped tensors: [(positions, (B, ...) stacked)], first-seen order;
    None entries (nothing to stack) are left out."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for position, tensor in enumerate(tensors):
        if tensor is None:
            continue
        groups.setdefault(tuple(tensor.shape), []).append(position)
    return [(positions, torch.stack([tensors[p] for p in positions]))
            for positions in groups.values()]


class _NothingToDo(Dataset):
    """One placeholder item for a rank with no images: it collates to an empty batch
    (Lightning refuses a zero-length loader on one rank, and that rank must still
    reach the store barrier)."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict:
        return {"placeholder": True}


def collate_images(items: list[dict]) -> dict:
    """Dataset items -> one batch.

    Returns:
        ``{"ids": [...], "image_sizes": [(H, W)], "backbone_scales": [(sy, sx)],
        "descriptor_scales": [(sy, sx)], "backbone_groups": [(positions, (B, 3, h, w))],
        "patch_grids": [PatchGrid | None] (cached tokens; those images are in no
        backbone group), "feature_maps": [(C, h', w') | None] (cached descriptor
        maps; those images are in no descriptor group), "descriptor_groups": [...]
        (empty when the descriptor needs no image or every map is cached),
        "skipped": [(image_id, reason)]}``; positions index ``ids``.
    """
    items = [item for item in items if not item.get("placeholder")]
    good = [item for item in items if item["error"] is None]
    batch = {
        "ids": [item["id"] for item in good],
        "image_sizes": [item["image_size"] for item in good],
        "backbone_scales": [item["backbone_scale"] for item in good],
        "descriptor_scales": [item["descriptor_scale"] for item in good],
        "backbone_groups": _stack_by_shape([item["backbone_pixels"] for item in good]),
        "patch_grids": [item["patch_grid"] for item in good],
        "feature_maps": [item["feature_map"] for item in good],
        "descriptor_groups": _stack_by_shape([item["descriptor_pixels"] for item in good]),
        "skipped": [(item["id"], item["error"]) for item in items if item["error"] is not None],
    }
    return batch


def _one_torch_thread(worker_id: int) -> None:
    """Each decoding worker is one process; letting each also start a full torch
    thread pool would oversubscribe the cores the forwards need."""
    torch.set_num_threads(1)


class ImageListDataModule(pl.LightningDataModule):
    """Predict-only DataModule over ``[(image_id, path)]``.

    Args:
        images: (image_id, absolute path) pairs, ids unique.
        backbone, descriptor: their ``preprocess`` runs in the workers.
        batch_size: images per batch (> 0).
        num_workers: DataLoader worker processes per rank (0 = decode in the main
            process; None: :func:`claid.engine.cut_pool.decode_workers` of this rank's
            share of the node's CPU affinity).
        bucket: order each rank's images by header shape so batches are homogeneous.
        token_cache, map_cache: cached PatchGrids and descriptor maps used instead of
            the networks where cached (``FeatureCache``), or None.
        todo: called on global rank 0 only, in ``setup`` (after the ranks started):
            ``images`` -> the ones still to do (e.g. not in a fresh listing of the
            store); its answer is broadcast to every rank. None: all of ``images``.

    After ``setup``, ``todo_images`` is the broadcast list and ``rank_images`` this
    rank's share of it, in processing order.
    """

    def __init__(self, images: Sequence[tuple[str, str]], *, backbone, descriptor,
                 batch_size: int = 4, num_workers: int | None = 0, bucket: bool = True,
                 token_cache: FeatureCache | None = None,
                 map_cache: FeatureCache | None = None,
                 todo: Callable[[list[tuple[str, str]]], list[tuple[str, str]]] | None = None,
                 decode: DecodeOptions = DEFAULT_DECODE) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 0):
            raise ValueError(f"num_workers must be an integer >= 0 or null, got {num_workers!r}")
        self.images = list(images)
        self.backbone = backbone
        self.descriptor = descriptor
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.bucket = bucket
        self.token_cache = token_cache
        self.map_cache = map_cache
        self.todo = todo
        self.decode = decode
        self.todo_images: list[tuple[str, str]] = list(self.images)
        self.rank_images: list[tuple[str, str]] = []

    def images_for_rank(self, rank: int, world_size: int) -> list[tuple[str, str]]:
        """This rank's share of ``todo_images``, in processing order."""
        todo = self.todo_images
        mine = [todo[i] for i in rank_slice(len(todo), rank, world_size)]
        if self.bucket:
            sizes = [image_size_from_header(path) for _, path in mine]
            mine = [mine[i] for i in bucket_order(sizes)]
        return mine

    def setup(self, stage: str) -> None:
        trainer = self.trainer
        rank = trainer.global_rank if trainer is not None else 0
        world_size = trainer.world_size if trainer is not None else 1
        if self.todo is not None:
            self.todo_images = self._decide_todo(trainer, rank)
        self.rank_images = self.images_for_rank(rank, world_size)

    def _decide_todo(self, trainer, rank: int) -> list[tuple[str, str]]:
        """Rank 0 asks ``todo``; every rank receives its answer as positions into
        ``images`` (small to broadcast), checked against its own list's length."""
        answer = None
        if rank == 0:
            position = {pair: k for k, pair in enumerate(self.images)}
            chosen = self.todo(list(self.images))
            unknown = [pair for pair in chosen if pair not in position]
            if unknown:
                raise ValueError(f"todo returned images not in the list, e.g. {unknown[:3]}")
            answer = (len(self.images), np.asarray([position[p] for p in chosen], np.int64))
        if trainer is not None and trainer.world_size > 1:
            answer = trainer.strategy.broadcast(answer, src=0)
        count, positions = answer
        if count != len(self.images):
            raise ValueError(f"rank {rank} has {len(self.images)} images, rank 0 has {count}: "
                             "every rank must be given the same image list")
        return [self.images[k] for k in positions.tolist()]

    def predict_dataloader(self) -> DataLoader:
        if not self.rank_images:
            return DataLoader(_NothingToDo(), batch_size=1, collate_fn=collate_images)
        dataset = ImageListDataset(self.rank_images, backbone=self.backbone,
                                   descriptor=self.descriptor, token_cache=self.token_cache,
                                   map_cache=self.map_cache, decode=self.decode)
        ranks_per_node = max(1, int(getattr(self.trainer, "num_devices", 1) or 1))
        workers = decode_workers(self.num_workers, ranks_per_node=ranks_per_node)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=workers,
            collate_fn=collate_images,
            worker_init_fn=_one_torch_thread if workers else None,
            pin_memory=torch.cuda.is_available(),
        )
