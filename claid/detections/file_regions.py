"""The extraction stage of ``cutter=from_file``: the file's regions of every database
image, described by the run's descriptor, into the run's region store.

It takes the place of the Lightning extraction (:func:`claid.engine.extract_regions`)
inside :func:`claid.engine.extraction_stage.extract_stage` (same store key, lock, reuse and
checks): no backbone forward and no cut, only one descriptor forward per image, so a
plain loop on global rank 0 does it. A region with a segmentation is pooled under
its mask when the descriptor pools by mask; a box-only region by its box. Images the
file does not name get zero regions (``regions_from_file.images_without_entries``
in the store's summary and the run report).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from claid.config.rules import SettingsError
from claid.structures import RegionDescriptors

log = logging.getLogger(__name__)


def _describe(descriptor, feature_map, scale, regions) -> np.ndarray:
    """(R, dim) vectors: masked regions with their masks, box-only ones by their box."""
    vectors = np.zeros((len(regions.boxes), descriptor.dim), dtype=np.float32)
    for with_mask in (True, False):
        rows = np.nonzero(regions.has_mask == with_mask)[0]
        if len(rows):
            masks = regions.masks[rows] if with_mask else None
            vectors[rows] = descriptor.pool(feature_map, regions.boxes[rows], scale, masks,
                                            None, mask_cell_px=regions.cell)
    return vectors


def extract_from_file(cfg, bench, parts, store_dir: Path, key: dict) -> None:
    """Describe the regions ``cfg.cutter`` reads from its file into ``store_dir``.

    Resumable like the Lightning extraction (images already stored are not redone;
    shards of ``engine.shard_size`` images); undecodable images are recorded as skipped.

    Raises:
        RegionsFileError: a bad entry or image size (one line: file, entry, why).
        SettingsError: the descriptor pools the detector's tokens (it needs a backbone).
    """
    from claid.engine.datamodule import long_side_used
    from claid.engine.extract import _summarise, format_summary
    from claid.engine.ranks import is_global_zero
    from claid.images import ImageError, image_size_from_header, load_image, original_size
    from claid.store import RegionStore, RegionStoreWriter, ensure_store, write_summary

    if not is_global_zero():  # one loop, on rank 0; the other ranks have nothing to do
        return
    descriptor = parts.get("descriptor")
    if not descriptor.needs_image:
        raise SettingsError(f"cutter=from_file needs a descriptor that reads the image; "
                            f"{cfg.descriptor._target_} pools the detector's tokens (a backbone)")
    started = time.perf_counter()
    regions_file = parts.get("cutter").load(list(bench.database))
    sizes = {}
    for image_id in regions_file.by_image:
        size = image_size_from_header(bench.path(image_id))
        if size is not None:  # an unreadable file is skipped below, with its reason
            sizes[image_id] = size
    regions_file.check_sizes(sizes)  # every entry checked before any image is described
    dim, dtype = int(descriptor.dim), cfg.store.dtype
    ensure_store(str(store_dir), config=key, dim=dim, dtype=dtype)
    done = RegionStore.open(str(store_dir)).done_ids()
    writer = RegionStoreWriter(str(store_dir), config=key, dim=dim, dtype=dtype,
                               shard_size=int(cfg.engine.get("shard_size", 256)))
    param = next(descriptor.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    timings = {"decode": 0.0, "descriptor_forward": 0.0, "pool": 0.0}
    for image_id in bench.database:
        if image_id in done:
            continue
        tick = time.perf_counter()
        try:
            image = load_image(bench.path(image_id),
                               long_side_needed=lambda h, w: long_side_used([descriptor], h, w))
            pixels, scale = descriptor.preprocess(image)
        except (ImageError, ValueError) as err:
            writer.skip(image_id, getattr(err, "reason", f"preprocessing failed: {err}"))
            continue
        height, width = original_size(image)
        if image_id in regions_file.by_image and image_id not in sizes:
            regions_file.check_sizes({image_id: (height, width)})
        regions = regions_file.regions_of(image_id, height, width, cfg.cutter.mask_cell)
        timings["decode"] += time.perf_counter() - tick
        tick = time.perf_counter()
        with torch.no_grad():
            feature_map = descriptor(pixels.unsqueeze(0).to(device))[0]
        timings["descriptor_forward"] += time.perf_counter() - tick
        tick = time.perf_counter()
        whole_box = np.array([[0.0, 0.0, float(width), float(height)]], dtype=np.float32)
        whole = descriptor.pool(feature_map, whole_box, scale, None, None)[0]
        vectors = _describe(descriptor, feature_map, scale, regions)
        timings["pool"] += time.perf_counter() - tick
        writer.add(RegionDescriptors(image_id=image_id, image_size=(height, width), boxes=regions.boxes,
                                     masks=regions.masks, depth=regions.depth, parent=regions.parent,
                                     vectors=vectors, whole_vector=np.asarray(whole, dtype=np.float32)),
                   cell=regions.cell)
    writer.flush()
    store = RegionStore.open(str(store_dir))
    summary = _summarise(store, list(bench.database), done, time.perf_counter() - started, timings,
                         {"regions_from_file": regions_file.counts})
    write_summary(str(store_dir), summary)
    log.info("regions from %s: %s", regions_file.path, regions_file.counts)
    if bool(cfg.engine.get("progress", True)):
        print(format_summary(summary), flush=True)
