"""Lightning callbacks of the extraction stage: persist every batch, show images/s.

``StoreWriter`` hands each predicted batch to a :class:`claid.store.RegionStoreWriter`
of this rank, which commits a shard atomically every ``shard_size`` images and at
the end. If the run fails, the uncommitted buffer is dropped (never half-written);
a rerun recomputes exactly those images. With feature caches it also writes each
image's PatchGrid and descriptor map that the caches lack (one atomic file per
image, :mod:`claid.engine.feature_cache`), and records skipped images there. At the
end each rank writes its report (counts, timings) into the store, before the barrier
after which rank 0 gathers them.
"""

from __future__ import annotations

import os
import socket
import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter
from tqdm.auto import tqdm

from claid.engine.feature_cache import FeatureCache
from claid.engine.rank_reports import write_rank_report
from claid.store import RegionStoreWriter

__all__ = ["StoreWriter", "ExtractionProgress"]


class StoreWriter(BasePredictionWriter):
    """Writes ``ExtractionModule.predict_step`` outputs into a region store.

    Args:
        store_dir: the store directory.
        config: resolved config recorded in (and checked against) the manifest.
        dim: descriptor length.
        dtype: stored vector dtype, "float16" or "float32".
        shard_size: images per committed shard.
        token_cache, map_cache: feature caches to fill with the PatchGrids and the
            descriptor maps they lack (the module must return them:
            ``ExtractionModule(return_features=True)``), or None.
    """

    def __init__(self, store_dir: str, *, config: dict, dim: int, dtype: str = "float16",
                 shard_size: int = 256, token_cache: FeatureCache | None = None,
                 map_cache: FeatureCache | None = None) -> None:
        super().__init__(write_interval="batch")
        self.store_dir = store_dir
        self.config = config
        self.dim = dim
        self.dtype = dtype
        self.shard_size = shard_size
        self.token_cache = token_cache
        self.map_cache = map_cache
        self.writer: RegionStoreWriter | None = None
        self.images_written = 0
        self.regions_written = 0
        self.skipped_written = 0
        self.drained = 0  # images and skips written at the end (steps lag their input)
        self.started = 0.0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.writer = RegionStoreWriter(
            self.store_dir, config=self.config, dim=self.dim, dtype=self.dtype,
            rank=trainer.global_rank, shard_size=self.shard_size,
        )

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.perf_counter()

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch,
                           batch_idx, dataloader_idx) -> None:
        self._write(prediction)

    def _write(self, prediction: dict) -> None:
        self._fill_caches(prediction)
        for item, cell in zip(prediction["regions"], prediction["cells"]):
            self.writer.add(item, cell=cell)
            self.regions_written += len(item)
        for image_id, reason in prediction["skipped"]:
            self.writer.skip(image_id, reason)
        self.images_written += len(prediction["regions"])
        self.skipped_written += len(prediction["skipped"])

    def _fill_caches(self, prediction: dict) -> None:
        """Cache what the networks computed in this prediction (before the store
        records the image as done, so a crash never leaves a done image uncached)."""
        if self.token_cache is None and self.map_cache is None:
            return
        if prediction.get("patch_grids") is None:
            raise ValueError("feature caches need ExtractionModule(return_features=True)")
        for k, item in enumerate(prediction["regions"]):
            # what a network computed is written (also over a stale entry of a file
            # that changed size); what came from the cache is not rewritten
            image_id = item.image_id
            tokens_computed, map_computed = prediction["computed"][k]
            if self.token_cache is not None and tokens_computed:
                self.token_cache.put_patch_grid(image_id, prediction["patch_grids"][k])
            fmap = prediction["feature_maps"][k]
            if self.map_cache is not None and fmap is not None and map_computed:
                self.map_cache.put_feature_map(image_id, fmap, prediction["descriptor_scales"][k],
                                               item.image_size)
        for image_id, reason in prediction["skipped"]:
            for cache in (self.token_cache, self.map_cache):
                if cache is not None and not cache.has(image_id):
                    cache.skip(image_id, reason)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a step's output lags its input (cuts overlap later forwards): the batches
        # still being cut are described and written before the last commit
        drain = getattr(pl_module, "drain_pending", None)
        if drain is not None:
            rest = drain()
            self._write(rest)
            self.drained = len(rest["regions"]) + len(rest["skipped"])
        # the cut pool's timings exist once it is closed; callbacks run before the
        # module's own on_predict_end, so close it here for the rank report
        close = getattr(pl_module, "close_cut_pool", None)
        if close is not None:
            close()
        self.writer.flush()
        # This rank's timings and counts exist only in this process (under ddp_spawn,
        # one the caller never sees): they go into the store for rank 0 to gather.
        write_rank_report(self.store_dir, trainer.global_rank, {
            "world_size": trainer.world_size, "node_rank": trainer.node_rank,
            "local_rank": trainer.local_rank, "host": socket.gethostname(), "pid": os.getpid(),
            "images": self.images_written, "regions": self.regions_written,
            "skipped": self.skipped_written,
            "seconds": round(time.perf_counter() - self.started, 3),
            "timings_seconds": {k: round(float(v), 3)
                                for k, v in getattr(pl_module, "timings", {}).items()},
            "token_sources": dict(getattr(pl_module, "token_sources", {})),
        })
        # Every rank's last shard and report must be written before rank 0 summarises
        # the store.
        trainer.strategy.barrier("claid-store-flushed")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        if self.writer is not None:
            self.writer.discard()
        close = getattr(pl_module, "close_cut_pool", None)
        if close is not None:
            close(cancel=True)


class ExtractionProgress(pl.Callback):
    """A tqdm bar in images/s (rank 0 only; counts that rank's share of the images,
    read from the datamodule's ``rank_images``).

    Args:
        enabled: False shows nothing (tests, non-interactive logs).
    """

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar = None
        self.regions = 0
        self.started = 0.0

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.perf_counter()
        if self.enabled and trainer.is_global_zero:
            suffix = f" (rank 0 of {trainer.world_size})" if trainer.world_size > 1 else ""
            total = len(getattr(trainer.datamodule, "rank_images", [])) or None
            # rate_noinv: always images/s (tqdm would flip to s/img below 1 img/s)
            self.bar = tqdm(
                total=total,
                unit="img",
                desc=f"extracting{suffix}",
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, "
                "{rate_noinv_fmt}{postfix}]",
            )

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                             dataloader_idx: int = 0) -> None:
        if self.bar is None:
            return
        self.regions += sum(len(item) for item in outputs["regions"])
        self.bar.update(len(outputs["regions"]) + len(outputs["skipped"]))
        self.bar.set_postfix(regions=self.regions, refresh=False)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.bar is not None:
            # the batches the store writer drained after the last step (it runs first)
            self.bar.update(sum(c.drained for c in trainer.callbacks if isinstance(c, StoreWriter)))
            self.bar.close()
            self.bar = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        self.on_predict_end(trainer, pl_module)
