"""A full disk is one DiskFullError naming the path, and leaves no half-written artifact.

Where the machine allows (root, tmpfs), the disk really is a tiny tmpfs that fills up;
``/dev/full`` gives a real ENOSPC everywhere on Linux; the store test also runs with
the error injected, so it never depends on privileges."""

from __future__ import annotations

import errno
import os
import subprocess
import uuid

import numpy as np
import pytest

import claid.store.writer as store_writer
from claid.artifacts import DiskFullError, atomic_write_bytes, write_synced
from claid.store import RegionStore, RegionStoreWriter
from tests.test_store import CONFIG, DIM, make_item


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs mounted at tmp_path/disk (skipped where mounting is not allowed)."""
    mount_point = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the simulated tests cover it")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_enospc_from_the_kernel_names_the_path():
    with pytest.raises(DiskFullError) as info:
        write_synced("/dev/full", b"x" * 100_000)
    assert info.value.errno == errno.ENOSPC  # still an OSError with its errno
    assert str(info.value).startswith("disk full: cannot write /dev/full (No space left")


def test_atomic_write_on_a_full_disk_keeps_the_old_file(tiny_disk):
    target = tiny_disk / "metrics.json"
    atomic_write_bytes(target, b"old")
    with pytest.raises(DiskFullError, match=rf"disk full: cannot write {target} .*bytes free"):
        atomic_write_bytes(target, b"y" * 1_000_000)
    assert target.read_bytes() == b"old"
    assert os.listdir(tiny_disk) == ["metrics.json"]  # no temporary file left behind


def test_store_flush_on_a_full_disk(tiny_disk):
    writer = RegionStoreWriter(tiny_disk / "store", config=CONFIG, dim=DIM, dtype="float32",
                               shard_size=1000)
    writer.add(make_item("a.jpg", 3, seed=0))
    writer.flush()
    for i in range(400):  # ~2 MB of vectors: more than the disk holds
        writer.add(make_item(f"b{i}.jpg", 50, seed=i + 1))
    with pytest.raises(DiskFullError, match=f"disk full: cannot write {tiny_disk}/store/"):
        writer.flush()
    assert os.listdir(tiny_disk / "store" / "staging") == []  # the partial shard is gone
    assert RegionStore.open(tiny_disk / "store").image_ids == ["a.jpg"]


def test_store_flush_enospc_simulated(tmp_path, monkeypatch):
    writer = RegionStoreWriter(tmp_path, config=CONFIG, dim=DIM, dtype="float32")
    writer.add(make_item("a.jpg", 3, seed=0))
    writer.flush()
    writer.add(make_item("b.jpg", 3, seed=1))
    real_save = store_writer.save_npy_synced

    def full_disk(path, array: np.ndarray):
        if path.endswith("vectors.npy"):
            with open(path, "wb") as f:
                f.write(b"\x93NUMPY partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(path, array)

    monkeypatch.setattr(store_writer, "save_npy_synced", full_disk)
    with pytest.raises(DiskFullError, match=rf"disk full: cannot write {tmp_path}/staging/"):
        writer.flush()
    assert os.listdir(tmp_path / "staging") == []
    monkeypatch.setattr(store_writer, "save_npy_synced", real_save)
    writer.flush()  # space is back: the buffered image is committed, nothing lost
    assert RegionStore.open(tmp_path).image_ids == ["a.jpg", "b.jpg"]


def test_other_os_errors_are_not_called_a_full_disk(tmp_path):
    with pytest.raises(OSError) as info:
        write_synced(tmp_path / "absent" / "file.bin", b"x")
    assert not isinstance(info.value, DiskFullError)


def test_faiss_write_error_on_a_full_disk_is_named(tiny_disk):
    from claid.index import build_index
    from claid.index.index_dir import save_index

    vectors = np.random.default_rng(0).normal(size=(2000, 64)).astype(np.float32)  # 512 KB
    index = build_index(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    with pytest.raises(DiskFullError, match=f"disk full: cannot write {tiny_disk}/index-x/index.faiss"):
        save_index(index, tiny_disk / "index-x")
    assert os.listdir(tiny_disk) == []  # the temporary folder is gone


def test_library_runtime_error_reporting_enospc_is_a_full_disk(tmp_path):
    from claid.artifacts import disk_full_guard

    with pytest.raises(DiskFullError, match=f"disk full: cannot write {tmp_path}/x.faiss"):
        with disk_full_guard(tmp_path / "x.faiss"):
            raise RuntimeError("Error: 'ret == (size * 4)' failed: write error in /tmp/x: "
                               "4051 != 256000 (No space left on device)")
    with pytest.raises(RuntimeError, match="something else"):
        with disk_full_guard(tmp_path / "x.faiss"):
            raise RuntimeError("something else")


def test_a_flat_index_streamed_to_a_full_disk_leaves_no_file(tiny_disk):
    from claid.index.flat_file import write_flat_index

    chunks = (np.ones((1000, 64), np.float32) for _ in range(4))  # 1 MB: more than the disk
    with pytest.raises(DiskFullError, match="disk full: cannot write"):
        write_flat_index(tiny_disk / "index.faiss.tmp", 64, 4000, chunks)
    assert os.listdir(tiny_disk) == []
