"""The batched model work of extraction: backbone -> cutter -> descriptor, per batch.

``ExtractionModule.predict_step`` runs, for one batch from
:func:`claid.engine.datamodule.collate_images`:

1. the backbone forward (one per input shape), tokens copied to the CPU as
   ``PatchGrid`` s; images whose PatchGrid came from a token cache (the batch's
   ``patch_grids``) are in no backbone group and skip this;
2. the cutter on every PatchGrid, submitted to a thread pool (the k-sums cutter is
   numba ``nogil`` code, so threads run truly in parallel) ...
3. ... while the descriptor forward runs on the accelerator, so the region
   decomposition and the second network overlap;
4. pooling one vector per region, once the image's regions are known.

Per-phase wall times are accumulated in ``timings`` (seconds; the accelerator is
synchronised around each forward so the split is honest on a GPU): backbone_forward,
tokens_to_cpu, cut (inline cutting, or submitting to the pool), descriptor_forward,
cut_wait, pool, and predict_loop (the whole loop, data loading and writing included).
``token_sources`` counts the images whose tokens came from the backbone and from
the cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytorch_lightning as pl
import torch

from claid.backbones.base import Backbone
from claid.descriptors.base import RegionDescriptor
from claid.structures import PatchGrid, RegionDescriptors, RegionTree

__all__ = ["ExtractionModule", "describe_regions"]


def describe_regions(
    image_id: str,
    patch_grid: PatchGrid,
    tree: RegionTree,
    *,
    descriptor: RegionDescriptor,
    feature_map: torch.Tensor | None,
    descriptor_scale: tuple[float, float],
) -> RegionDescriptors:
    """One image's regions (patch units) -> boxes in original pixels + one vector each.

    Args:
        image_id: the image's id.
        patch_grid: its detector tokens (gives the patch -> pixel mapping).
        tree: the cutter's output on ``patch_grid``.
        descriptor: pools the vectors.
        feature_map: (C, h', w') descriptor map of this image (None when the
            descriptor needs no image).
        descriptor_scale: (sy, sx) original pixels per descriptor-input pixel.
    Returns:
        RegionDescriptors with (R, dim) float32 L2-normalised vectors, and the
        whole image's vector pooled from the same map (one more box, nearly free).
    Raises:
        ValueError: the descriptor returned the wrong shape.
    """
    count = len(tree)
    boxes = patch_grid.patch_boxes_to_pixels(tree.boxes)
    height, width = (float(v) for v in patch_grid.image_size)
    whole_box = np.array([[0.0, 0.0, width, height]], dtype=np.float32)
    whole = np.asarray(descriptor.pool(feature_map, whole_box, descriptor_scale, None, patch_grid),
                       dtype=np.float32)
    if count:
        vectors = descriptor.pool(feature_map, boxes, descriptor_scale, tree.masks, patch_grid)
        vectors = np.asarray(vectors, dtype=np.float32)
    else:
        vectors = np.zeros((0, descriptor.dim), dtype=np.float32)
    for name, got, rows in (("regions", vectors, count), ("whole image", whole, 1)):
        if got.shape != (rows, descriptor.dim):
            raise ValueError(f"{image_id}: descriptor.pool returned {got.shape} for the "
                             f"{name}, expected ({rows}, {descriptor.dim})")
    return RegionDescriptors(
        image_id=image_id,
        image_size=tuple(int(v) for v in patch_grid.image_size),
        boxes=boxes,
        masks=tree.masks,
        depth=np.asarray(tree.depth, dtype=np.int64),
        parent=np.asarray(tree.parent, dtype=np.int64),
        vectors=vectors,
        whole_vector=whole[0],
    )


class ExtractionModule(pl.LightningModule):
    """Lightning shell around backbone, cutter and descriptor for ``trainer.predict``.

    Args:
        backbone: a claid Backbone (image -> tokens); None when every batch brings
            cached PatchGrids.
        cutter: callable PatchGrid -> RegionTree.
        descriptor: a claid RegionDescriptor.
        cut_workers: threads for the cutter; 0 runs it inline (best on CPU-only
            machines, where the forwards already use every core).
        keep_tokens: return the PatchGrids too (for the store's token cache).

    ``predict_step`` returns ``{"regions": [RegionDescriptors], "cells": [(cy, cx)],
    "patch_grids": [PatchGrid] | None, "skipped": [(image_id, reason)]}``.
    """

    def __init__(self, *, backbone: Backbone | None, cutter: Callable[[PatchGrid], RegionTree],
                 descriptor: RegionDescriptor, cut_workers: int = 0,
                 keep_tokens: bool = False) -> None:
        super().__init__()
        if not callable(cutter):
            raise ValueError(f"cutter must be callable PatchGrid -> RegionTree, got {cutter!r}")
        if cut_workers < 0:
            raise ValueError(f"cut_workers must be >= 0, got {cut_workers}")
        self.backbone = backbone
        self.descriptor = descriptor
        self.cutter = cutter
        self.cut_workers = cut_workers
        self.keep_tokens = keep_tokens
        self.timings: dict[str, float] = {}
        self.token_sources = {"backbone": 0, "cache": 0}
        self._pool: ThreadPoolExecutor | None = None
        self._loop_started = 0.0

    # -- timing

    @contextmanager
    def _timed(self, phase: str, sync: bool = False):
        if sync and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        yield
        if sync and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - start

    # -- thread pool lifecycle (not created in __init__: the module may be pickled)

    def on_predict_start(self) -> None:
        self.timings = {}
        self.token_sources = {"backbone": 0, "cache": 0}
        self._loop_started = time.perf_counter()
        if self.cut_workers > 0:
            self._pool = ThreadPoolExecutor(self.cut_workers, thread_name_prefix="claid-cut")

    def on_predict_end(self) -> None:
        # the whole loop: the denominator of the time split (decoding waits included)
        self.timings["predict_loop"] = time.perf_counter() - self._loop_started
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _cut(self, patch_grid: PatchGrid) -> Future | RegionTree:
        if self._pool is None:
            return self.cutter(patch_grid)
        return self._pool.submit(self.cutter, patch_grid)

    # -- the step

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        ids = batch["ids"]
        patch_grids: list[PatchGrid | None] = list(batch.get("patch_grids") or [None] * len(ids))
        self.token_sources["cache"] += sum(grid is not None for grid in patch_grids)
        for positions, pixels in batch["backbone_groups"]:
            if self.backbone is None:
                raise ValueError(f"images {[ids[p] for p in positions][:5]} have no cached "
                                 "tokens and there is no backbone")
            patch = self.backbone.patch_size
            self.token_sources["backbone"] += len(positions)
            with self._timed("backbone_forward", sync=True):
                tokens = self.backbone(pixels)
            with self._timed("tokens_to_cpu"):
                tokens = tokens.float().cpu().numpy()
            grid = (int(pixels.shape[-2]) // patch, int(pixels.shape[-1]) // patch)
            for k, position in enumerate(positions):
                patch_grids[position] = PatchGrid(
                    tokens=tokens[k],
                    grid=grid,
                    patch_size=patch,
                    scale=tuple(batch["backbone_scales"][position]),
                    image_size=tuple(batch["image_sizes"][position]),
                )
        with self._timed("cut"):
            trees = [self._cut(patch_grid) for patch_grid in patch_grids]
        feature_maps: list[torch.Tensor | None] = [None] * len(ids)
        for positions, pixels in batch["descriptor_groups"]:
            with self._timed("descriptor_forward", sync=True):
                fmap = self.descriptor(pixels)
            for k, position in enumerate(positions):
                feature_maps[position] = fmap[k]
        regions, cells, skipped = [], [], list(batch["skipped"])
        for position, image_id in enumerate(ids):
            patch_grid = patch_grids[position]
            with self._timed("cut_wait"):
                tree = trees[position]
                tree = tree.result() if isinstance(tree, Future) else tree
            if tree.grid != patch_grid.grid:
                raise ValueError(f"{image_id}: cutter returned grid {tree.grid}, "
                                 f"tokens have {patch_grid.grid}")
            with self._timed("pool"):
                regions.append(describe_regions(
                    image_id, patch_grid, tree, descriptor=self.descriptor,
                    feature_map=feature_maps[position],
                    descriptor_scale=tuple(batch["descriptor_scales"][position]),
                ))
            sy, sx = patch_grid.scale
            cells.append((patch_grid.patch_size * sy, patch_grid.patch_size * sx))
        return {
            "regions": regions,
            "cells": cells,
            "patch_grids": patch_grids if self.keep_tokens else None,
            "skipped": skipped,
        }
