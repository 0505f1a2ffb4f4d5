"""A region store damaged after it was written: every part of shard.json is typed and
in range, regions.npy's values are checked, and export-coco exports nothing damaged."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from claid.artifacts import DamagedArtifactError
from claid.store import RegionStore
from claid.store.integrity import drop_damaged_shards, verify_store
from claid.verify import verify_path

from .stores import first_shard, make_store


@pytest.fixture
def store_dir(tmp_path):
    return make_store(tmp_path)


def _edit_info(store_dir, change, *, keep_digest=False):
    path = os.path.join(first_shard(store_dir), "shard.json")
    info = json.loads(open(path).read())
    change(info)
    if keep_digest:
        from claid.store.shard_info import info_digest
        info["info_sha256"] = info_digest(info)
    with open(path, "w") as f:
        json.dump(info, f)


def test_a_clean_store_verifies_with_its_values(store_dir):
    ok, lines = verify_path(store_dir)
    assert ok, lines


@pytest.mark.parametrize("change, why", [
    (lambda info: info["images"][0].pop("height"), "images[0]: 'height' missing"),
    (lambda info: info["images"][0].update(width="64"), "images[0]: 'width' must be an integer"),
    (lambda info: info["images"][1].update(n_regions=-5), "'n_regions' must be an integer from 0"),
    (lambda info: info["images"][0].update(grid=[4]), "'grid' must be null or a pair"),
    (lambda info: info["images"][0].update(id=7), "'id' must be a non-empty string"),
    (lambda info: info.update(skipped=[["a"]]), "skipped[0] must be [image id, reason]"),
    (lambda info: info["images"].append("x"), "images[2] is not an object"),
])
def test_a_bad_image_entry_is_a_damaged_shard_verify_finds_and_a_run_moves(store_dir, change, why):
    _edit_info(store_dir, change, keep_digest=True)  # caught by the field rules, not the digest
    ok, lines = verify_path(store_dir)
    assert not ok and any(why in line for line in lines), lines
    with pytest.raises(DamagedArtifactError, match="corrupt shard"):
        RegionStore.open(store_dir)
    with pytest.warns(UserWarning, match="moved to damaged/"):
        moved = drop_damaged_shards(store_dir)
    assert len(moved) == 1 and RegionStore.open(store_dir).num_images == 2


def test_an_in_range_edit_of_shard_json_is_found_by_its_own_checksum(store_dir):
    _edit_info(store_dir, lambda info: info["images"][0].update(id="img/9.jpg"))
    check = verify_store(store_dir)
    assert any("info_sha256" in p for p in check.damaged[os.path.basename(first_shard(store_dir))])


def _set_row(store_dir, field, value, row=1):
    path = os.path.join(first_shard(store_dir), "regions.npy")
    regions = np.load(path)
    regions[field][row] = value
    np.save(path, regions)  # same size: only checksums or values tell


@pytest.mark.parametrize("field, value, why", [
    ("box", [np.nan, 1, 5, 5], "is not a finite box"),
    ("parent", 1_000_000, "parent 1000000 is not a region of its image"),
    ("depth", -3, "depth < 0"),
    ("mask_offset", 10**9, "outside masks.rle"),
    ("image", 1, "image numbers disagree"),
])
def test_regions_values_are_checked_even_without_file_records(store_dir, field, value, why):
    _set_row(store_dir, field, value)
    _edit_info(store_dir, lambda info: (info.pop("files"), info.pop("info_sha256")))  # an older shard
    ok, lines = verify_path(store_dir)
    assert not ok and any(why in line for line in lines), lines


def _export(store_dir, out):
    return subprocess.run([sys.executable, "-m", "claid", "export-coco", store_dir, str(out)],
                          capture_output=True, text=True, timeout=300)


def test_export_stops_on_masks_overwritten_with_the_same_number_of_bytes(store_dir, tmp_path):
    path = os.path.join(first_shard(store_dir), "masks.rle")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.write(b"0" * size)
    done = _export(store_dir, tmp_path / "out.json")
    assert done.returncode == 1 and not (tmp_path / "out.json").exists()
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert "masks.rle" in done.stderr


def test_export_stops_on_a_nan_box_or_a_far_parent(store_dir, tmp_path):
    _set_row(store_dir, "box", [np.nan, 1, 5, 5])
    done = _export(store_dir, tmp_path / "out.json")
    assert done.returncode == 1 and done.stderr.startswith("error: ") and "regions.npy" in done.stderr
    assert not (tmp_path / "out.json").exists()


def test_a_damaged_mask_read_through_the_store_is_an_error_not_a_crash(store_dir):
    path = os.path.join(first_shard(store_dir), "masks.rle")
    data = bytearray(open(path, "rb").read())
    data[:4] = b"zzzz"  # run lengths that no longer cover the grid
    open(path, "wb").write(bytes(data))
    with pytest.raises(DamagedArtifactError, match="masks.rle"):
        RegionStore.open(store_dir).masks([0])


# what the store fuzzer found first (tests/boundary/fuzz_store_files.py)

def test_a_damaged_npy_header_is_a_damaged_shard_not_a_tokenizer_error(store_dir):
    path = os.path.join(first_shard(store_dir), "regions.npy")
    data = bytearray(open(path, "rb").read())
    data[data.index(b"}")] = ord("(")  # an unclosed bracket: Python's tokenizer gives up
    open(path, "wb").write(bytes(data))
    ok, lines = verify_path(store_dir)
    assert not ok and any("damaged .npy header" in line for line in lines), lines


def test_a_manifest_dtype_of_another_type_is_damage_not_a_type_error(store_dir):
    path = os.path.join(store_dir, "manifest.json")
    manifest = json.loads(open(path).read())
    manifest["dtype"] = []
    open(path, "w").write(json.dumps(manifest))
    with pytest.raises(DamagedArtifactError, match="dtype must be one of"):
        RegionStore.open(store_dir)


def test_reading_a_mask_at_a_huge_offset_is_damage_not_an_os_error(store_dir):
    _set_row(store_dir, "mask_offset", 2**62)
    with pytest.raises(DamagedArtifactError, match="outside masks.rle"):
        RegionStore.open(store_dir).masks([1])
