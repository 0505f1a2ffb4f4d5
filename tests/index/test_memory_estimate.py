"""The memory estimate before extraction: index sizes from FAISS, and a stop that
names the estimate and a preset that fits."""

import pytest
from omegaconf import OmegaConf

from claid.config.rules import SettingsError
from claid.index.index_stage import SearchSettings
from claid.index.memory_estimate import (
    GIB,
    check_run_memory,
    estimate_run_memory,
    index_bytes_per_row,
    memory_settings,
)

ROOT_CONF = __import__("pathlib").Path(__file__).resolve().parents[2] / "conf"


def _cfg(preset: str, **search):
    return memory_settings(
        index=OmegaConf.to_container(OmegaConf.load(ROOT_CONF / "index" / f"{preset}.yaml")),
        descriptor_dim=2048, stored_dtype="float16",
        search=SearchSettings(whole_image_region=False, global_baseline=True, memory_gb=1.0,
                              regions_per_image=20, **search))


def test_bytes_per_row_follow_the_factory():
    assert index_bytes_per_row("Flat", 2048) == 2048 * 4
    assert index_bytes_per_row("IVF1024,PQ64", 256) == 64 + 8  # code + id in its list
    assert index_bytes_per_row("IVF1024,PQ64,Refine(SQ8)", 256) == 64 + 8 + 256
    assert index_bytes_per_row("HNSW32", 256) > 256 * 4


def test_instre_size_flat_needs_its_float32_index_and_ivfpq_far_less():
    flat = estimate_run_memory(_cfg("flat"), 27_000, 1250)
    assert flat.rows == 540_000 and flat.parts["index"] == 540_000 * 2048 * 4
    assert flat.parts["search"] == GIB  # exhaustive search working memory
    ivfpq = estimate_run_memory(_cfg("ivfpq"), 27_000, 1250)
    assert ivfpq.parts["index"] == 540_000 * 72 and ivfpq.parts["search"] == 0
    assert ivfpq.total < flat.total


def test_a_run_that_cannot_fit_stops_with_the_estimate_and_a_preset_that_fits():
    cfg = _cfg("flat", max_memory_gb=24)
    assert check_run_memory(cfg, 27_000, 1) is not None  # fits
    with pytest.raises(SettingsError, match=r"estimated memory .* GiB .*1,000,000 images.*"
                                            r"use index=.*ivfpq"):
        check_run_memory(_cfg("flat", max_memory_gb=24), 1_000_000, 1)
    with pytest.raises(SettingsError, match="no shipped index preset fits"):
        check_run_memory(_cfg("flat", max_memory_gb=2), 5_000_000, 1)


def test_an_on_disk_index_counts_one_parts_codes_not_the_whole_index():
    ondisk = estimate_run_memory(_cfg("ivfpq_ondisk"), 27_000, 1250)
    in_memory = estimate_run_memory(_cfg("ivfpq"), 27_000, 1250)
    rows = 27_000 * 20
    assert in_memory.parts["index"] == rows * 72
    assert ondisk.parts["index"] == 2 * (rows // 4) * 64  # two copies of one part of four, 64-byte codes
