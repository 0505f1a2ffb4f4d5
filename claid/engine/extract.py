"""The extraction stage: images -> region store, resumable, on any Lightning accelerator."""

from __future__ import annotations

import os
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence

import pytorch_lightning as pl

from claid.backbones.base import Backbone
from claid.engine.datamodule import ImageListDataModule
from claid.engine.feature_cache import FeatureCache
from claid.engine.module import ExtractionModule
from claid.engine.prediction_writer import ExtractionProgress, StoreWriter
from claid.images import DEFAULT_DECODE, DecodeOptions
from claid.store import RegionStore, ensure_store, write_summary
from claid.structures import PatchGrid, RegionTree

__all__ = ["extract_regions", "format_summary"]

_MAX_LISTED_SKIPS = 1000  # the manifest lists this many; the shards hold them all


def _check_images(images: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    checked = []
    for entry in images:
        if (not isinstance(entry, (tuple, list)) or len(entry) != 2
                or not all(isinstance(v, str) for v in entry)):
            raise ValueError(f"images must be (image_id, path) string pairs, got {entry!r}")
        checked.append((entry[0], entry[1]))
    counts = Counter(image_id for image_id, _ in checked)
    duplicates = [image_id for image_id, n in counts.items() if n > 1]
    if duplicates:
        raise ValueError(f"image ids must be unique; repeated: {duplicates[:5]}")
    return checked


def _reason_head(reason: str) -> str:
    """'truncated or corrupt: image file is truncated (3 bytes...)' -> 'truncated or corrupt'."""
    return reason.split(":", 1)[0].strip()


def summarise_extraction(store: RegionStore, requested: list[str], already_done: set[str],
               seconds: float, timings: dict, extra: dict) -> dict:
    processed = set(store.image_ids)
    skipped = dict(store.skipped)
    requested_set = set(requested)
    new_images = len((processed & requested_set) - already_done)
    new_skipped = len((set(skipped) & requested_set) - already_done)
    counts = store.region_counts()
    return {
        "requested": len(requested),
        "already_done": len(already_done & requested_set),
        "new_images": new_images,
        "new_skipped": new_skipped,
        "missing": sorted(requested_set - processed - set(skipped)),
        "images": store.num_images,
        "regions": store.num_regions,
        "regions_per_image": float(counts.mean()) if len(counts) else 0.0,
        "images_without_regions": int((counts == 0).sum()),
        "skipped": len(skipped),
        "skipped_by_reason": dict(Counter(_reason_head(r) for r in skipped.values())),
        "skipped_images": [[i, r] for i, r in store.skipped[:_MAX_LISTED_SKIPS]],
        "seconds": round(seconds, 3),
        "images_per_second": round((new_images + new_skipped) / seconds, 3) if seconds else 0.0,
        "timings_rank0_seconds": {k: round(v, 3) for k, v in timings.items()},
        **extra,
    }


class StillToDo:
    """The images not yet in the store, from a fresh listing (run on global rank 0 by
    the datamodule; picklable, so it travels to ``ddp_spawn`` ranks).

    ``already_done`` holds the ids that listing found done (None until called).
    """

    def __init__(self, store_dir: str, *, retry_skipped: bool) -> None:
        self.store_dir = store_dir
        self.retry_skipped = retry_skipped
        self.already_done: set[str] | None = None

    def __call__(self, images: list[tuple[str, str]]) -> list[tuple[str, str]]:
        store = RegionStore.open(self.store_dir)
        done = set(store.image_ids) if self.retry_skipped else store.done_ids()
        self.already_done = done
        return [(image_id, path) for image_id, path in images if image_id not in done]


def _single_process(devices, num_nodes: int) -> bool:
    """True when this run cannot have other ranks (one device, one node, no launcher)."""
    one_device = devices in (1, "1") or (isinstance(devices, (list, tuple)) and len(devices) == 1)
    return one_device and num_nodes == 1 and os.environ.get("WORLD_SIZE", "1") == "1"


def format_summary(summary: dict, max_skips: int = 20) -> str:
    """The end-of-run summary as a few readable lines."""
    lines = [
        f"extraction: {summary['images']} images, {summary['regions']} regions "
        f"({summary['regions_per_image']:.1f}/image, {summary['images_without_regions']} "
        f"with none), {summary['skipped']} skipped",
        f"this run: {summary['new_images']} new images, {summary['new_skipped']} new skips, "
        f"{summary['already_done']} already done, {summary['seconds']:.1f} s "
        f"({summary['images_per_second']:.2f} images/s)",
    ]
    if "feature_caches" in summary:
        tokens = summary.get("token_sources_rank0", {})
        maps = summary.get("map_sources_rank0", {})
        lines.append(f"feature caches (rank 0): tokens of {tokens.get('cache', 0)} images "
                     f"cached, {tokens.get('backbone', 0)} through the backbone; descriptor maps "
                     f"of {maps.get('cache', 0)} cached, {maps.get('descriptor', 0)} computed")
    if summary["missing"]:
        lines.append(f"MISSING (neither stored nor skipped): {len(summary['missing'])}, "
                     f"e.g. {summary['missing'][:5]}")
    for reason, n in sorted(summary["skipped_by_reason"].items()):
        lines.append(f"  skipped {n:>6} x {reason}")
    for image_id, reason in summary["skipped_images"][:max_skips]:
        lines.append(f"    {image_id}: {reason}")
    if summary["skipped"] > max_skips:
        lines.append(f"    ... {summary['skipped'] - max_skips} more in the store's shards")
    return "\n".join(lines)


def _require_cached(missing_network: bool, what: str, cache: FeatureCache | None,
                    todo_ids: list[str]) -> None:
    """Refuse a run whose missing network's cache lacks some images to do (images the
    cache recorded as skipped are skipped again, with that reason)."""
    if not missing_network:
        return
    if cache is None:
        raise ValueError(f"{what} needs a feature cache holding every image to do")
    missing = cache.missing(todo_ids)
    if missing:
        raise ValueError(f"{what}, but {len(missing)} of the {len(todo_ids)} images to do are "
                         f"not in the cache {cache.directory} (e.g. {missing[:3]}); pass the "
                         "network so they can be computed")


def extract_regions(
    images: Sequence[tuple[str, str]],
    *,
    backbone: Backbone | None,
    cutter: Callable[[PatchGrid], RegionTree],
    descriptor,
    store_dir: str,
    config: dict,
    accelerator: str = "cpu",
    devices: int | str | list[int] = 1,
    batch_size: int = 4,
    num_workers: int | None = 0,
    precision: str = "32-true",
    dtype: str = "float16",
    token_cache: FeatureCache | None = None,
    map_cache: FeatureCache | None = None,
    progress: bool = True,
    shard_size: int = 256,
    cut_workers: int | None = None,
    strategy: str = "auto",
    retry_skipped: bool = False,
    num_nodes: int = 1,
    cut_pool: str = "thread",
    cut_queue: int = 2,
    profile: bool = False,
    decode: DecodeOptions = DEFAULT_DECODE,
) -> RegionStore:
    """Detect and describe the regions of every image into a region store; resumable.

    Images already in ``store_dir`` (processed, or skipped unless ``retry_skipped``)
    are not redone, so a killed run continues where its last committed shard
    ended. Files that cannot be decoded are recorded as skipped with the reason,
    and the run goes on.

    With ``token_cache`` (:class:`claid.engine.feature_cache.FeatureCache` of this
    backbone's tokens on these images) the backbone does not run for the images it
    caches: the cached PatchGrid goes to the cutter and the descriptor instead; the
    images it lacks go through the backbone and are added to it. ``map_cache`` does
    the same for the descriptor's feature maps, so with both full a re-cut (another
    cutter) only cuts and pools, and does not even decode the files. A cached
    image whose file now decodes to another size is treated as uncached (or skipped
    when the network is missing). The cached path stays inside the Lightning loop:
    it keeps the cut pool, the lagging writes, the resumable shards and the ranks of
    a network run, and Lightning's own cost is a fixed start-up, not per image.

    Args:
        images: (image_id, absolute path) pairs, ids unique.
        backbone: a claid Backbone; may be None with a ``token_cache`` that holds
            the tokens of every image to do (images it recorded as skipped are
            skipped again with that reason). cutter: callable PatchGrid -> RegionTree;
            descriptor: a claid RegionDescriptor; one built without its network
            (``has_network`` False) pools the maps of a full ``map_cache`` only.
        store_dir: the store directory (name it ``regions-<config_hash(config)>``).
        config: the resolved config that produced the store (recorded; an existing
            store made with another config is refused).
        accelerator, devices, precision, strategy, num_nodes: passed to ``pl.Trainer``
            (``devices`` per node); with several ranks each writes its own shards over
            a disjoint slice of the images that global rank 0 found still to do. Under
            torchrun or SLURM, ``devices * num_nodes`` must equal the world size.
        batch_size: images per batch; num_workers: decoding worker processes per
            rank (None: a quarter of the rank's share of the CPU affinity, at most 8).
        dtype: stored vector dtype, "float16" or "float32".
        token_cache: the backbone's cached PatchGrids, read and filled, or None.
        map_cache: the descriptor's cached feature maps, read and filled, or None
            (unused when the descriptor needs no image).
        progress: show a tqdm bar in images/s and print the summary.
        shard_size: images per committed shard (what a crash can cost).
        cut_workers: cut workers per rank; None = 0 on CPU (the forwards use every
            core), else this rank's share of the CPU affinity of the node minus its
            decoding workers and main thread. Cuts overlap later batches' forwards.
        cut_pool: ``thread`` (the k-sums kernels release the GIL) or ``process``
            (scales past the ~15 % of a cut that holds the GIL; spawn start-up).
        cut_queue: batches that may wait for their cuts before a step blocks.
        profile: synchronise the device around each forward so ``timings`` split
            honestly (it stalls the overlap; off for production runs).
        retry_skipped: try the images recorded as skipped again (a later success
            supersedes the skip record).
        decode: how the files are decoded (:class:`claid.images.DecodeOptions`).
    Returns:
        The store, opened for reading; its ``summary`` describes this run (with
        caches: their folders and how many images each network / cache served).
    Raises:
        ValueError: bad arguments; a network is missing and its cache lacks some
            images to do.
    """
    images = _check_images(images)
    checked = [("batch_size", batch_size, 1), ("shard_size", shard_size, 1)]
    if num_workers is not None:
        checked.append(("num_workers", num_workers, 0))
    for name, value, least in checked:
        if not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if not isinstance(num_nodes, int) or num_nodes < 1:
        raise ValueError(f"num_nodes must be an integer >= 1, got {num_nodes!r}")
    for name, cache, kind in (("token_cache", token_cache, "tokens"),
                              ("map_cache", map_cache, "feature_maps")):
        if cache is not None and (not isinstance(cache, FeatureCache) or cache.kind != kind):
            raise ValueError(f"{name} must be a FeatureCache of kind {kind!r}, got {cache!r}")
    if not descriptor.needs_image:
        map_cache = None
    dim = int(descriptor.dim)
    # Fails early when store_dir holds a store of another config.
    ensure_store(store_dir, config=config, dim=dim, dtype=dtype)
    existing = RegionStore.open(store_dir)
    already_done = set(existing.image_ids) if retry_skipped else existing.done_ids()
    todo = [(image_id, path) for image_id, path in images if image_id not in already_done]
    todo_ids = [image_id for image_id, _ in todo]
    _require_cached(backbone is None, "backbone=None", token_cache, todo_ids)
    _require_cached(not getattr(descriptor, "has_network", True) and descriptor.needs_image,
                    "a descriptor without its network", map_cache, todo_ids)
    caching = token_cache is not None or map_cache is not None

    started = time.perf_counter()
    module = ExtractionModule(backbone=backbone, cutter=cutter, descriptor=descriptor,
                              cut_workers=cut_workers, cut_pool=cut_pool, cut_queue=cut_queue,
                              num_workers=num_workers, profile=profile,
                              return_features=caching)
    is_rank_zero = True
    extra = {"accelerator": accelerator, "devices": str(devices), "num_nodes": num_nodes,
             "world_size": 1, "cut_pool": cut_pool}
    if caching:
        extra["feature_caches"] = {"tokens": token_cache and token_cache.directory,
                                   "feature_maps": map_cache and map_cache.directory}
    still_to_do = StillToDo(store_dir, retry_skipped=retry_skipped)
    # A lone process with nothing to do skips the Trainer; ranks of a distributed
    # run always enter it (one rank staying out would hang the others), and rank 0's
    # fresh listing decides for all of them.
    if todo or not _single_process(devices, num_nodes):
        datamodule = ImageListDataModule(images, backbone=backbone, descriptor=descriptor,
                                         batch_size=batch_size, num_workers=num_workers,
                                         token_cache=token_cache, map_cache=map_cache,
                                         todo=still_to_do, decode=decode)
        writer = StoreWriter(store_dir, config=config, dim=dim, dtype=dtype,
                             shard_size=shard_size, token_cache=token_cache, map_cache=map_cache)
        trainer = pl.Trainer(
            accelerator=accelerator, devices=devices, num_nodes=num_nodes, precision=precision,
            strategy=strategy, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
            use_distributed_sampler=False, inference_mode=True,
            callbacks=[writer, ExtractionProgress(enabled=progress)],
        )
        try:
            with warnings.catch_warnings():
                # num_workers=0 is a deliberate choice on small CPU runs
                warnings.filterwarnings("ignore", message=".*does not have many workers.*")
                trainer.predict(module, datamodule=datamodule, return_predictions=False)
        finally:
            module.close_cut_pool(cancel=True)
        is_rank_zero = trainer.is_global_zero
        extra["world_size"] = trainer.world_size
        extra["cut_workers"] = module.cut_workers_used
        extra["token_sources_rank0"] = dict(module.token_sources)
        extra["map_sources_rank0"] = dict(module.map_sources)
        if still_to_do.already_done is not None:  # rank 0 listed the store in this process
            already_done = still_to_do.already_done
    store = RegionStore.open(store_dir)
    if is_rank_zero:
        summary = summarise_extraction(store, [i for i, _ in images], already_done,
                             time.perf_counter() - started, module.timings, extra)
        write_summary(store_dir, summary)
        store = RegionStore.open(store_dir)
        if progress:
            print(format_summary(summary), flush=True)
    return store
