"""What a detector file's regions will cost, counted before any mask is decoded.

    estimate_masks(regions_file, sizes, mask_cell) -> MaskEstimate
    check_mask_memory(regions_file, sizes, mask_cell, max_memory_gb=None)
        RegionsFileError naming the estimate and the settings that bound it

A file of a million tiny entries is a few megabytes of JSON but a million masks: the
extraction holds the masks of one image at once (as booleans on the store's grid of
``cutter.mask_cell`` pixels, or on the grid of claid's own ``claid_mask``), then a
uint8 copy and a Fortran-ordered copy while they are encoded to RLE, so the peak is
:data:`COPIES` times the largest image's masks. The run stops before extraction when
that exceeds the limit (``search.max_memory_gb``, default this machine's memory,
the same limit as the index's memory estimate), saying which settings bound it:
``cutter.max_regions`` (the best regions per image) and ``cutter.mask_cell``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from claid.detections.read import RegionsFile, RegionsFileError

#: the masks of one image are held this many times at the peak (bool, uint8, Fortran copy)
COPIES = 3
GIB = 2**30


@dataclass(frozen=True)
class MaskEstimate:
    """``regions``: entries kept; ``peak_bytes``: the largest image's masks x COPIES;
    ``peak_image`` / ``peak_regions``: that image and its region count; ``cells``:
    mask cells of every region (the work of filling them)."""

    regions: int
    peak_bytes: int
    peak_image: str | None
    peak_regions: int
    cells: int

    def describe(self) -> str:
        return (f"{self.regions:,} regions; the largest image, {self.peak_image!r}, holds "
                f"{self.peak_regions:,} masks = {self.peak_bytes / GIB:.2f} GiB at once")


def _grid_cells(regions, height: int, width: int, mask_cell: int) -> int:
    grids = [r.grid_mask.get("grid") if r.grid_mask is not None else None for r in regions]
    if regions and all(isinstance(g, list) and len(g) == 2 for g in grids) and len({tuple(g) for g in grids}) == 1:
        return int(grids[0][0]) * int(grids[0][1])  # claid's own masks, used as they are
    return -(-height // mask_cell) * -(-width // mask_cell)


def estimate_masks(regions_file: RegionsFile, sizes: dict[str, tuple[int, int]], mask_cell: int) -> MaskEstimate:
    """The cost of the masks of every image of ``sizes`` (image id -> (height, width))."""
    total = cells = peak = peak_regions = 0
    peak_image = None
    for image_id, (height, width) in sizes.items():
        regions = regions_file.by_image.get(image_id, [])
        per_mask = _grid_cells(regions, height, width, mask_cell)
        total += len(regions)
        cells += len(regions) * per_mask
        held = COPIES * len(regions) * per_mask
        if held > peak:
            peak, peak_image, peak_regions = held, image_id, len(regions)
    return MaskEstimate(total, peak, peak_image, peak_regions, cells)


def machine_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_mask_memory(regions_file: RegionsFile, sizes: dict[str, tuple[int, int]], mask_cell: int,
                      max_memory_gb: float | None = None) -> MaskEstimate:
    """Stop (one line) when the masks of one image would exceed the limit; else the estimate."""
    estimate = estimate_masks(regions_file, sizes, mask_cell)
    limit = int(float(max_memory_gb) * GIB) if max_memory_gb is not None else machine_memory_bytes()
    if estimate.peak_bytes <= limit:
        return estimate
    per_region = max(1, estimate.peak_bytes // max(1, estimate.peak_regions))
    fits = max(1, limit // per_region)
    raise RegionsFileError(
        f"{regions_file.path}: estimated memory for the masks {estimate.peak_bytes / GIB:.1f} GiB "
        f"({estimate.describe()}) exceeds the limit of {limit / GIB:.1f} GiB (search.max_memory_gb, "
        f"default this machine's memory); keep fewer regions per image (cutter.max_regions={fits:,} "
        f"fits) or store coarser masks (cutter.mask_cell, now {mask_cell})")
