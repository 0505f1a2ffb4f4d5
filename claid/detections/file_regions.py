"""Regions read from another detector's COCO file (``cutter=from_file``): a region
source of the extraction stage, beside the cut (:mod:`claid.engine.cut_source`).

:class:`RegionsFromFile` holds the settings (a misspelled key is an error) and says
what keys the store: the file's and the images file's **content** (sha256), never
their paths, and no backbone (none is built or loaded, and no token cache is read).
Its extraction replaces the Lightning one inside
:func:`claid.engine.extraction_stage.extract_stage` (same store key rule, lock, reuse
and checks): no backbone forward and no cut, only one descriptor forward per image, so
a plain loop on global rank 0 does it. A region with a segmentation is pooled under
its mask when the descriptor pools by mask; a box-only region by its box. Images the
file does not name get zero regions (``regions_from_file.images_without_entries``
in the store's summary and the run report). Its regions are then stored, indexed,
searched, evaluated and logged by the same stages as any cutter's.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from claid.config.build import Components
from claid.config.rules import SettingsError, any_string, at_least, check_fields, is_number, setting
from claid.detections.budget import check_mask_memory
from claid.structures import RegionDescriptors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FromFileSettings:
    """The settings of ``cutter=from_file`` (ranges: the field rules, checked on construction)."""

    path: str = setting("", any_string)  # COCO results list or COCO dataset dict (claid/detections/read.py)
    # a COCO file whose "images" list maps image_id -> file_name
    images: str | None = setting(None, lambda v: None if v is None else any_string(v))
    max_regions: int | None = setting(None, at_least(1, optional=True))  # keep the best this many per image
    # keep entries scoring at least this (unscored: kept)
    min_score: float | None = setting(None, lambda v: None if v is None or is_number(v) else "must be a number or null")
    mask_cell: int = setting(1, at_least(1))  # pixels per cell of the stored masks of pixel segmentations

    def __post_init__(self) -> None:
        check_fields(self, "cutter")


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


class RegionsFromFile:
    """Regions from a file; the ``cutter`` group's ``_target_`` for ``cutter=from_file``.

    Args:
        node: the ``cutter`` group's resolved node (keys the store, with the files'
            paths replaced by their contents' sha256).
        descriptor: the ``descriptor`` group's resolved node.
        **settings: :class:`FromFileSettings` (``path``, ``images``, ...).
    """

    SETTINGS = FromFileSettings  # what **settings may hold (claid.config.checks.check_group_keys)
    makes_regions = True  # claid.config.run_settings.region_source: a source, not a cutter

    def __init__(self, *, node: dict, descriptor: dict, memory_limit_gb: float | None = None,
                 **settings: Any) -> None:
        self.settings = FromFileSettings(**settings)
        self.memory_limit_gb = memory_limit_gb  # search.max_memory_gb: the masks' estimate stops above it
        self.node, self.descriptor_node = dict(node), descriptor
        self.networks = Components({"descriptor": descriptor})

    def key_parts(self) -> dict:
        """The store key's parts: the files' contents' sha256 and no backbone."""
        from claid.engine.extraction_stage import region_descriptor_key

        cutter = dict(self.node)
        cutter["path"] = {"sha256": file_sha256(cutter["path"])}
        if cutter.get("images"):
            cutter["images"] = {"sha256": file_sha256(cutter["images"])}
        return {"backbone": None, "cutter": cutter, "descriptor": region_descriptor_key(self.descriptor_node)}

    def weight_groups(self) -> dict[str, dict]:
        """The groups whose weight files the run needs: the descriptor only."""
        return {"descriptor": self.descriptor_node}

    def descriptor(self) -> Any:
        """The region descriptor (built on first use, shared with the query stage)."""
        return self.networks.get("descriptor")

    def report_counts(self, store) -> dict:
        """What the file gave (``regions_from_file`` in the run report's counts)."""
        summary = store.summary or {}
        return {"regions_from_file": summary["regions_from_file"]} if "regions_from_file" in summary else {}

    def load(self, database: list[str]):
        """The file's regions of ``database`` (:class:`claid.detections.read.RegionsFile`)."""
        from claid.detections.read import RegionsFile

        s = self.settings
        file_sha256(s.path)  # an unset or unreadable path: its one line
        return RegionsFile.load(s.path, database, images_file=s.images,
                                max_regions=s.max_regions, min_score=s.min_score)

    def extract(self, settings, bench, cache_dir: Path, key: dict, store_dir: Path) -> None:
        """Describe the regions the file gives for ``bench``'s database into ``store_dir``.

        Resumable like the Lightning extraction (images already stored are not redone;
        shards of ``engine.shard_size`` images); undecodable images are recorded as skipped.

        Raises:
            RegionsFileError: a bad entry or image size (one line: file, entry, why).
            SettingsError: the descriptor pools the detector's tokens (it needs a backbone).
        """
        from claid.engine.datamodule import long_side_used
        from claid.engine.extract import format_summary, summarise_extraction
        from claid.engine.ranks import is_global_zero
        from claid.images import ImageError, image_size_from_header, load_image, original_size
        from claid.store import RegionStore, RegionStoreWriter, ensure_store, write_summary

        if not is_global_zero():  # one loop, on rank 0; the other ranks have nothing to do
            return
        descriptor = self.descriptor()
        if not descriptor.needs_image:
            raise SettingsError(f"cutter=from_file needs a descriptor that reads the image; "
                                f"{self.descriptor_node['_target_']} pools the detector's tokens (a backbone)")
        started = time.perf_counter()
        regions_file = self.load(list(bench.database))
        sizes = {}
        for image_id in regions_file.by_image:
            size = image_size_from_header(bench.path(image_id))
            if size is not None:  # an unreadable file is skipped below, with its reason
                sizes[image_id] = size
        regions_file.check_sizes(sizes)  # every entry checked before any image is described
        estimate = check_mask_memory(regions_file, sizes, self.settings.mask_cell, self.memory_limit_gb)
        regions_file.counts["mask_memory_bytes"] = estimate.peak_bytes  # before any mask is decoded
        dim, dtype = int(descriptor.dim), settings.store_dtype
        ensure_store(str(store_dir), config=key, dim=dim, dtype=dtype)
        done = RegionStore.open(str(store_dir)).done_ids()
        writer = RegionStoreWriter(str(store_dir), config=key, dim=dim, dtype=dtype,
                                   shard_size=settings.shard_size)
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
            regions = regions_file.regions_of(image_id, height, width, self.settings.mask_cell)
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
        summary = summarise_extraction(store, list(bench.database), done, time.perf_counter() - started, timings,
                             {"regions_from_file": regions_file.counts})
        write_summary(str(store_dir), summary)
        log.info("regions from %s: %s", regions_file.path, regions_file.counts)
        if settings.progress:
            print(format_summary(summary), flush=True)


def file_sha256(path: str) -> str:
    """sha256 of a file's bytes (a missing file is the one-line RegionsFileError)."""
    from claid.detections.read import RegionsFileError

    if not path:
        raise RegionsFileError("cutter.path must name the regions file (cutter=from_file cutter.path=results.json)")
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise RegionsFileError(f"{path}: cannot read the regions file ({err.strerror or err})") from None
    return digest.hexdigest()
