"""The batched model work of extraction: backbone -> cutter -> descriptor, per batch.

``ExtractionModule.predict_step`` runs, for one batch from
:func:`claid.engine.datamodule.collate_images`:

1. the backbone forward (one per input shape); its tokens are copied to pinned host
   memory without blocking; images whose PatchGrid came from a token cache (the
   batch's ``patch_grids``) are in no backbone group and skip this;
2. the descriptor forward, launched before waiting for that copy, so it runs on the
   device while the host builds the PatchGrids; images whose map came from a
   feature-map cache (the batch's ``feature_maps``) skip it;
3. the cuts of every PatchGrid, queued in a :class:`claid.engine.cut_pool.CutQueue`
   (a pool of threads or processes fed by a bounded queue spanning batches): the
   step does not wait for them, so the device runs the next batch's forwards while
   this batch is cut;
4. pooling (one batched operation per image) of every earlier batch whose cuts are
   done. The step returns those batches (oldest first), so a step's output lags its
   input; ``drain_pending`` returns what is still queued at the end (the store
   writer calls it before its last commit).

Per-phase wall times are accumulated in ``timings`` (seconds): backbone_forward,
descriptor_forward (on a GPU these time the launch only, unless ``profile``
synchronises the device around each forward), tokens_to_cpu, cut_submit (handing
cuts over; inline cuts themselves when ``cut_workers`` is 0), cut_wait (the step
blocked on cuts: the device was idle), cut_workers (seconds the workers spent
cutting, summed), pool, and predict_loop (the whole loop, data loading and
writing included). ``token_sources`` and ``map_sources`` count the images whose
tokens / descriptor maps came from the network and from the cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import pytorch_lightning as pl
import torch

from claid.backbones.base import Backbone
from claid.descriptors.base import RegionDescriptor
from claid.engine.cut_pool import CutQueue, PendingBatch, check_cut_settings, cut_pool_size
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
        cutter: callable PatchGrid -> RegionTree (picklable for a process pool).
        descriptor: a claid RegionDescriptor.
        cut_workers: cut workers of this rank; 0 cuts inline; None: 0 on the CPU,
            else this rank's share of the CPU affinity minus ``num_workers`` and the
            main thread (see :func:`claid.engine.cut_pool.cut_pool_size`).
        cut_pool: ``thread`` or ``process`` workers.
        cut_queue: batches that may wait for their cuts before a step blocks.
        num_workers: this rank's decoding processes (for the default pool size).
        profile: synchronise the device around each forward so the timings split
            honestly (costs the overlap of host and device work; off by default).
        return_features: return each image's PatchGrid and descriptor map too (for
            the feature caches, :mod:`claid.engine.feature_cache`).

    ``predict_step`` returns ``{"regions": [RegionDescriptors], "cells": [(cy, cx)],
    "patch_grids": [PatchGrid] | None, "feature_maps": [(C, h', w') | None] | None,
    "descriptor_scales": [(sy, sx)] | None, "computed": [(tokens, map)] | None,
    "skipped": [(image_id, reason)]}`` for the batches finished in that step (possibly
    none, possibly several); ``computed`` says whether a network (not a cache) made
    each image's tokens and map; the lists that may be None are None unless
    ``return_features``.
    """

    def __init__(self, *, backbone: Backbone | None, cutter: Callable[[PatchGrid], RegionTree],
                 descriptor: RegionDescriptor, cut_workers: int | None = 0,
                 cut_pool: str = "thread", cut_queue: int = 2, num_workers: int = 0,
                 profile: bool = False, return_features: bool = False) -> None:
        super().__init__()
        if not callable(cutter):
            raise ValueError(f"cutter must be callable PatchGrid -> RegionTree, got {cutter!r}")
        check_cut_settings(cut_workers, cut_pool, cut_queue, auto=True)
        self.backbone = backbone
        self.descriptor = descriptor
        self.cutter = cutter
        self.cut_workers = cut_workers
        self.cut_pool = cut_pool
        self.cut_queue = cut_queue
        self.num_workers = num_workers
        self.profile = profile
        self.return_features = return_features
        self.cut_workers_used = 0
        self.timings: dict[str, float] = {}
        self.token_sources = {"backbone": 0, "cache": 0}
        self.map_sources = {"descriptor": 0, "cache": 0}
        self._queue: CutQueue | None = None
        self._loop_started = 0.0

    # -- timing

    @contextmanager
    def _timed(self, phase: str, sync: bool = False):
        sync = sync and self.profile and self.device.type == "cuda"
        if sync:
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        yield
        if sync:
            torch.cuda.synchronize(self.device)
        self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - start

    # -- cut pool lifecycle (not created in __init__: the module may be pickled)

    def _ranks_per_node(self) -> int:
        trainer = self._trainer
        return max(1, int(getattr(trainer, "num_devices", 1) or 1)) if trainer is not None else 1

    def on_predict_start(self) -> None:
        self.timings = {}
        self.token_sources = {"backbone": 0, "cache": 0}
        self.map_sources = {"descriptor": 0, "cache": 0}
        self._loop_started = time.perf_counter()
        self.cut_workers_used = cut_pool_size(
            self.cut_workers, on_accelerator=self.device.type != "cpu",
            num_workers=self.num_workers, ranks_per_node=self._ranks_per_node())
        self._queue = CutQueue(self.cutter, workers=self.cut_workers_used, kind=self.cut_pool,
                               max_pending=self.cut_queue)

    def on_predict_end(self) -> None:
        # the whole loop: the denominator of the time split (decoding waits included)
        self.timings["predict_loop"] = time.perf_counter() - self._loop_started
        self.close_cut_pool()

    def close_cut_pool(self, cancel: bool = False) -> None:
        """Stop the cut workers (``cancel``: after an error, drop queued cuts)."""
        if self._queue is not None:
            self._queue.close(cancel=cancel)
            self.timings["cut_wait"] = self.timings.get("cut_wait", 0.0) + self._queue.wait_seconds
            self.timings["cut_workers"] = self._queue.cut_seconds
            self.timings["cut_submit"] = self._queue.submit_seconds
            self._queue = None

    def drain_pending(self) -> dict:
        """The batches still waiting for their cuts, described (blocks until cut);
        the same dict as ``predict_step``."""
        if self._queue is None:
            return self._describe([])
        return self._describe(self._queue.drain())

    # -- the step

    def _host_tokens(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """(B, N, D) device tokens -> float32 host copy, started without blocking
        (pinned memory on CUDA) and the event that marks its end."""
        tokens = tokens.float()
        if tokens.device.type != "cuda":
            return tokens.cpu(), None
        host = torch.empty(tokens.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(tokens, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()
        return host, copied

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        ids = batch["ids"]
        patch_grids: list[PatchGrid | None] = list(batch.get("patch_grids") or [None] * len(ids))
        token_computed = [grid is None for grid in patch_grids]
        self.token_sources["cache"] += sum(grid is not None for grid in patch_grids)
        copies = []
        for positions, pixels in batch["backbone_groups"]:
            if self.backbone is None:
                raise ValueError(f"images {[ids[p] for p in positions][:5]} have no cached "
                                 "tokens and there is no backbone")
            self.token_sources["backbone"] += len(positions)
            with self._timed("backbone_forward", sync=True):
                tokens = self.backbone(pixels)
            with self._timed("tokens_to_cpu"):
                copies.append((positions, pixels.shape[-2:], *self._host_tokens(tokens)))
        feature_maps: list[torch.Tensor | None] = list(batch.get("feature_maps")
                                                       or [None] * len(ids))
        self.map_sources["cache"] += sum(fmap is not None for fmap in feature_maps)
        map_computed = [fmap is None for fmap in feature_maps]
        for positions, pixels in batch["descriptor_groups"]:
            self.map_sources["descriptor"] += len(positions)
            with self._timed("descriptor_forward", sync=True):
                fmap = self.descriptor(pixels)
            for k, position in enumerate(positions):
                feature_maps[position] = fmap[k]
        with self._timed("tokens_to_cpu"):
            patch = self.backbone.patch_size if self.backbone is not None else 0
            for positions, (height, width), host, copied in copies:
                if copied is not None:
                    copied.synchronize()
                tokens = host.numpy()
                for k, position in enumerate(positions):
                    patch_grids[position] = PatchGrid(
                        tokens=tokens[k],
                        grid=(int(height) // patch, int(width) // patch),
                        patch_size=patch,
                        scale=tuple(batch["backbone_scales"][position]),
                        image_size=tuple(batch["image_sizes"][position]),
                    )
        pending = PendingBatch(patch_grids=patch_grids, payload={
            "ids": ids, "feature_maps": feature_maps,
            "descriptor_scales": batch["descriptor_scales"], "skipped": list(batch["skipped"]),
            "computed": list(zip(token_computed, map_computed))})
        return self._describe(self._queue.submit(pending))

    def _describe(self, batches: list[PendingBatch]) -> dict:
        regions, cells, grids, maps, scales, computed, skipped = [], [], [], [], [], [], []
        for batch in batches:
            payload = batch.payload
            for position, image_id in enumerate(payload["ids"]):
                patch_grid, tree = batch.patch_grids[position], batch.cuts[position]
                if tree.grid != patch_grid.grid:
                    raise ValueError(f"{image_id}: cutter returned grid {tree.grid}, "
                                     f"tokens have {patch_grid.grid}")
                with self._timed("pool"):
                    regions.append(describe_regions(
                        image_id, patch_grid, tree, descriptor=self.descriptor,
                        feature_map=payload["feature_maps"][position],
                        descriptor_scale=tuple(payload["descriptor_scales"][position]),
                    ))
                sy, sx = patch_grid.scale
                cells.append((patch_grid.patch_size * sy, patch_grid.patch_size * sx))
                grids.append(patch_grid)
                maps.append(payload["feature_maps"][position])
                scales.append(tuple(payload["descriptor_scales"][position]))
                computed.append(payload["computed"][position])
            skipped.extend(payload["skipped"])
        return {
            "regions": regions,
            "cells": cells,
            "patch_grids": grids if self.return_features else None,
            "feature_maps": maps if self.return_features else None,
            "descriptor_scales": scales if self.return_features else None,
            "computed": computed if self.return_features else None,
            "skipped": skipped,
        }
