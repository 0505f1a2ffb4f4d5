"""A detector file's regions are counted and their masks' memory estimated before any
mask is decoded; a file that would not fit stops with the estimate and the settings."""

import json
import tracemalloc

import pytest

from claid.detections.budget import COPIES, check_mask_memory, estimate_masks
from claid.detections.read import RegionsFile, RegionsFileError


def _many_tiny(tmp_path, n):
    entries = [{"file_name": "a.jpg", "bbox": [k % 600, (k // 600) % 400, 2, 2]} for k in range(n)]
    path = tmp_path / "many.json"
    path.write_text(json.dumps(entries))
    return RegionsFile.load(str(path), ["a.jpg", "b.jpg"])


def test_the_estimate_counts_every_mask_of_the_largest_image(tmp_path):
    regions = _many_tiny(tmp_path, 1000)
    estimate = estimate_masks(regions, {"a.jpg": (480, 640), "b.jpg": (480, 640)}, mask_cell=4)
    assert estimate.regions == 1000 and estimate.peak_image == "a.jpg"
    assert estimate.peak_bytes == COPIES * 1000 * 120 * 160


def test_a_file_of_many_tiny_entries_stops_before_any_mask_is_decoded(tmp_path):
    regions = _many_tiny(tmp_path, 50_000)
    sizes = {"a.jpg": (480, 640)}
    tracemalloc.start()
    try:
        regions.check_sizes(sizes)
        with pytest.raises(RegionsFileError) as err:
            check_mask_memory(regions, sizes, mask_cell=1, max_memory_gb=4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(err.value)
    assert "\n" not in message and "estimated memory for the masks 42.9 GiB" in message
    assert "search.max_memory_gb" in message and "cutter.max_regions=4,660 fits" in message
    assert "cutter.mask_cell" in message
    assert peak < 64 << 20  # the 43 GiB of masks were estimated, not allocated


def test_a_file_that_fits_passes_with_its_estimate(tmp_path):
    regions = _many_tiny(tmp_path, 100)
    estimate = check_mask_memory(regions, {"a.jpg": (480, 640)}, mask_cell=8, max_memory_gb=1)
    assert estimate.regions == 100 and "100 masks" in estimate.describe()
