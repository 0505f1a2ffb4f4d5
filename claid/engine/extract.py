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
from claid.engine.module import ExtractionModule
from claid.engine.token_cache import CachedTokens
from claid.engine.writer import ExtractionProgress, StoreWriter
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


def _summarise(store: RegionStore, requested: list[str], already_done: set[str],
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
    if "tokens_from" in summary:
        sources = summary.get("token_sources_rank0", {})
        lines.append(f"tokens: {sources.get('cache', 0)} images from the cache in "
                     f"{summary['tokens_from']['store']}, {sources.get('backbone', 0)} through "
                     "the backbone (rank 0)")
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


def _check_cached_tokens(cached: CachedTokens, source: RegionStore, backbone,
                         todo_ids: list[str]) -> None:
    """Refuse a token cache that cannot stand in for ``backbone`` (or for a missing one)."""
    if backbone is None:
        missing = [i for i in todo_ids if i not in cached and i not in cached.skipped]
        if missing:
            raise ValueError(
                f"backbone=None, but {len(missing)} of the {len(todo_ids)} images to do have "
                f"no cached tokens in {source.store_dir} (e.g. {missing[:3]}); pass the "
                "backbone so they can be computed")
        return
    if not len(cached):
        return
    # one image tells: a store holds the tokens of one backbone
    sample = cached.patch_grid(next(iter(sorted(cached.image_ids))))
    width = getattr(backbone, "embed_dim", sample.tokens.shape[1])
    if sample.patch_size != backbone.patch_size or sample.tokens.shape[1] != width:
        raise ValueError(
            f"tokens_from {source.store_dir} holds {sample.patch_size}-px patches of width "
            f"{sample.tokens.shape[1]}, the backbone makes {backbone.patch_size}-px patches of "
            f"width {width}: the token store was made by another backbone")


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
    keep_tokens: bool = False,
    token_dtype: str = "float16",
    tokens_from: RegionStore | None = None,
    progress: bool = True,
    shard_size: int = 256,
    cut_workers: int | None = None,
    strategy: str = "auto",
    retry_skipped: bool = False,
    num_nodes: int = 1,
    cut_pool: str = "thread",
    cut_queue: int = 2,
    profile: bool = False,
) -> RegionStore:
    """Detect and describe the regions of every image into a region store; resumable.

    Images already in ``store_dir`` (processed, or skipped unless ``retry_skipped``)
    are not redone, so a killed run continues where its last committed shard
    ended. Files that cannot be decoded are recorded as skipped with the reason,
    and the run goes on.

    With ``tokens_from`` (a store written with ``keep_tokens=True`` on the same
    images by the same backbone, e.g. found by :func:`claid.store.find_token_store`),
    the backbone does not run for the images whose PatchGrid that store caches: the
    cached PatchGrid (tokens, grid, patch size, scale, image size) goes to the
    cutter and the descriptor instead, and when the descriptor needs no image the
    file is not even decoded. Images without cached tokens fall back to the
    backbone. A cached image whose file now decodes to another size is treated as
    uncached (or skipped with that reason when there is no backbone).

    Args:
        images: (image_id, absolute path) pairs, ids unique.
        backbone: a claid Backbone; may be None with ``tokens_from`` when that store
            caches the tokens of every image to do (images it recorded as skipped
            may lack them: they are decoded again and skipped again, keeping the
            token store's reason if they now decode, since the same backbone
            rejected them). cutter: callable PatchGrid -> RegionTree;
            descriptor: a claid RegionDescriptor.
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
        keep_tokens: also cache each image's PatchGrid in the store (also the ones
            read from ``tokens_from``: the new store stands on its own).
        token_dtype: "float16" or "float32", how ``keep_tokens`` stores them;
            float32 makes a later ``tokens_from`` run bit-identical to a backbone run,
            float16 halves the size but rounds the tokens the cutter sees.
        tokens_from: a region store whose cached PatchGrids replace the backbone
            forward, or None.
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
    Returns:
        The store, opened for reading; its ``summary`` describes this run (with
        ``tokens_from``: the source store and the images whose tokens came from it).
    Raises:
        ValueError: bad arguments; ``backbone`` is None and some images to do have
            no cached tokens; the cached tokens do not fit the given backbone
            (patch size or token width).
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
    if token_dtype not in ("float16", "float32"):
        raise ValueError(f"token_dtype must be 'float16' or 'float32', got {token_dtype!r}")
    if backbone is None and tokens_from is None:
        raise ValueError("backbone=None needs tokens_from=<a store with cached tokens>")
    dim = int(descriptor.dim)
    # Fails early when store_dir holds a store of another config.
    ensure_store(store_dir, config=config, dim=dim, dtype=dtype)
    existing = RegionStore.open(store_dir)
    already_done = set(existing.image_ids) if retry_skipped else existing.done_ids()
    todo = [(image_id, path) for image_id, path in images if image_id not in already_done]
    cached_tokens = None
    if tokens_from is not None:
        # all requested images: rank 0's to-do list (broadcast later) may differ
        # from this rank's listing
        cached_tokens = CachedTokens(tokens_from, [image_id for image_id, _ in images])
        _check_cached_tokens(cached_tokens, tokens_from, backbone,
                             [image_id for image_id, _ in todo])

    started = time.perf_counter()
    module = ExtractionModule(backbone=backbone, cutter=cutter, descriptor=descriptor,
                              cut_workers=cut_workers, cut_pool=cut_pool, cut_queue=cut_queue,
                              num_workers=num_workers, profile=profile, keep_tokens=keep_tokens)
    is_rank_zero = True
    extra = {"accelerator": accelerator, "devices": str(devices), "num_nodes": num_nodes,
             "world_size": 1, "cut_pool": cut_pool}
    if cached_tokens is not None:
        extra["tokens_from"] = {"store": tokens_from.store_dir, "cached": len(cached_tokens)}
    still_to_do = StillToDo(store_dir, retry_skipped=retry_skipped)
    # A lone process with nothing to do skips the Trainer; ranks of a distributed
    # run always enter it (one rank staying out would hang the others), and rank 0's
    # fresh listing decides for all of them.
    if todo or not _single_process(devices, num_nodes):
        datamodule = ImageListDataModule(images, backbone=backbone, descriptor=descriptor,
                                         batch_size=batch_size, num_workers=num_workers,
                                         cached_tokens=cached_tokens, todo=still_to_do)
        writer = StoreWriter(store_dir, config=config, dim=dim, dtype=dtype,
                             shard_size=shard_size, token_dtype=token_dtype)
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
        if still_to_do.already_done is not None:  # rank 0 listed the store in this process
            already_done = still_to_do.already_done
    store = RegionStore.open(store_dir)
    if is_rank_zero:
        summary = _summarise(store, [i for i, _ in images], already_done,
                             time.perf_counter() - started, module.timings, extra)
        write_summary(store_dir, summary)
        store = RegionStore.open(store_dir)
        if progress:
            print(format_summary(summary), flush=True)
    return store
