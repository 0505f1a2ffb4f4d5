"""The on-disk IVF index (index=ivfpq_ondisk): built in parts, by separate processes,
resumed after a damaged part, opened from its index dir like any other."""

import json
import os
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from claid.artifacts import DamagedArtifactError
from claid.index import RegionIndex
from claid.index.chunked_build import build_from_table
from claid.index.index_dir import LISTS_FILE
from claid.index.ondisk_build import (
    ArrayTable,
    build_ondisk_index,
    build_part,
    merge_parts,
    part_rows,
    train_parts,
)
from claid.index.search_table import RegionTable, save_search_table

from .conftest import clustered_vectors

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"factory": "IVF16,PQ8x4", "whitening": "database", "whitening_dim": 24,
            "nprobe": 4, "train_size": 2000, "seed": 3}


@pytest.fixture(scope="module")
def vectors():
    return clustered_vectors(3000, 32, seed=7)


@pytest.fixture(scope="module")
def one_piece(vectors):
    """The same preset built in memory in one piece, with the same training sample."""
    return build_from_table(ArrayTable(vectors), **SETTINGS)


def _same_results(index, reference, queries, k=50):
    sims, ids = index.search(queries, k)
    ref_sims, ref_ids = reference.search(queries, k)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(sims, ref_sims)
    assert (ids >= 0).all()


def _save_and_reload(index, directory):
    index.save(directory)
    return RegionIndex.load(directory, mmap=True)


def test_parts_are_consecutive_and_cover_every_row():
    assert part_rows(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert part_rows(2, 4) == [(0, 0), (0, 1), (1, 1), (1, 2)]
    with pytest.raises(ValueError, match="parts"):
        part_rows(10, 0)


@pytest.mark.parametrize("parts", [1, 3])
def test_built_in_parts_equals_one_piece(vectors, one_piece, tmp_path, parts):
    index = build_ondisk_index(vectors, parts=parts, work_dir=tmp_path / "work", **SETTINGS)
    assert index.meta["lists"] == "ondisk" and index.meta["parts"] == parts
    assert not list((tmp_path / "work").glob("part-*"))  # removed after the merge
    _same_results(index, one_piece, vectors[:40])
    loaded = _save_and_reload(index, tmp_path / "index")
    assert (tmp_path / "index" / LISTS_FILE).is_file()
    ivf = faiss.extract_index_ivf(loaded.faiss_index)
    assert isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.OnDiskInvertedLists)
    _same_results(loaded, one_piece, vectors[:40])
    with pytest.raises(ValueError, match="memory-mapped"):
        loaded.add(vectors[:2])


def test_index_dir_moved_elsewhere_still_opens(vectors, one_piece, tmp_path):
    index = build_ondisk_index(vectors, parts=2, work_dir=tmp_path / "work", **SETTINGS)
    index.save(tmp_path / "a")
    os.rename(tmp_path / "a", tmp_path / "b")
    _same_results(RegionIndex.load(tmp_path / "b"), one_piece, vectors[:10])


def test_lists_file_missing_or_truncated_is_refused(vectors, tmp_path):
    build_ondisk_index(vectors, parts=2, work_dir=tmp_path / "work", **SETTINGS).save(tmp_path / "i")
    lists = tmp_path / "i" / LISTS_FILE
    with open(lists, "r+b") as f:
        f.truncate(lists.stat().st_size // 2)
    with pytest.raises(ValueError, match="bytes, the index needs"):
        RegionIndex.load(tmp_path / "i")
    lists.unlink()
    with pytest.raises(FileNotFoundError, match=LISTS_FILE):
        RegionIndex.load(tmp_path / "i")


_JOB = """
import sys, numpy as np
from claid.index.ondisk_build import ArrayTable, build_part
table = ArrayTable(np.load(sys.argv[1], mmap_mode="r"))
print(build_part(table, sys.argv[2], int(sys.argv[3]))["rows"])
"""


def test_two_processes_build_one_part_each_then_merge(vectors, one_piece, tmp_path):
    np.save(tmp_path / "vectors.npy", vectors)
    work = tmp_path / "work"
    train_parts(ArrayTable(vectors), work, 2, **SETTINGS)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    jobs = [subprocess.Popen([sys.executable, "-c", _JOB, str(tmp_path / "vectors.npy"), str(work),
                              str(part)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
            for part in range(2)]
    outputs = [job.communicate(timeout=300)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0]
    assert "[0, 1500]" in outputs[0] and "[1500, 3000]" in outputs[1]
    _same_results(_save_and_reload(merge_parts(work), tmp_path / "index"), one_piece, vectors[:40])


def test_finished_parts_are_kept_and_a_damaged_part_is_rebuilt(vectors, one_piece, tmp_path):
    work = tmp_path / "work"
    table = ArrayTable(vectors)
    train_parts(table, work, 3, **SETTINGS)
    first = [build_part(table, work, part) for part in range(3)]
    assert not any(record.get("reused") for record in first)
    # a job killed part way leaves no part file; a finished part is not redone
    assert all(build_part(table, work, part)["reused"] for part in range(3))
    damaged = work / "part-0001-of-0003.faiss"
    payload = bytearray(damaged.read_bytes())
    payload[-20] ^= 0xFF  # same size, other content: only the checksum tells
    damaged.write_bytes(bytes(payload))
    with pytest.raises(DamagedArtifactError, match="part-0001-of-0003.*sha256"):
        merge_parts(work)
    (work / "part-0002-of-0003.faiss").unlink()
    assert build_part(table, work, 0)["reused"]
    assert "reused" not in build_part(table, work, 1)
    assert "reused" not in build_part(table, work, 2)
    _same_results(merge_parts(work), one_piece, vectors[:40])
    # the whole build resumes from the work dir: nothing trained or encoded again
    again = build_ondisk_index(vectors, parts=3, work_dir=work, keep_parts=True, **SETTINGS)
    assert json.loads((work / "part-0000-of-0003.json").read_text())["file"]["size"] > 0
    _same_results(again, one_piece, vectors[:10])


def test_parts_of_another_training_are_not_merged(vectors, tmp_path):
    work = tmp_path / "work"
    table = ArrayTable(vectors)
    train_parts(table, work, 2, **SETTINGS)
    build_part(table, work, 0)
    train_parts(table, work, 2, **{**SETTINGS, "seed": 4})  # another training: old parts go
    with pytest.raises(DamagedArtifactError, match="part-0000-of-0002: not built"):
        merge_parts(work)


def test_too_few_rows_fall_back_like_the_in_memory_preset(tmp_path):
    vectors = clustered_vectors(300, 32, seed=1)
    index = build_ondisk_index(vectors, parts=2, work_dir=tmp_path / "work",
                               **{**SETTINGS, "factory": "IVF64,PQ8"})
    assert index.meta["fallback"]["requested"] == "IVF64,PQ8" and index.is_exact
    assert not (tmp_path / "work").exists()


def test_index_dir_checks_record_the_lists_file(vectors, tmp_path):
    from claid.index.index_dir_check import index_dir_problems

    index = build_ondisk_index(vectors, parts=2, work_dir=tmp_path / "work", **SETTINGS)
    index.save(tmp_path / "i")
    table = RegionTable(None, vectors, np.arange(len(vectors)), np.zeros((len(vectors), 4), np.float32),
                        [f"{i}.jpg" for i in range(len(vectors))], vectors.shape[1])
    save_search_table(tmp_path / "i", table, descriptor={}, key={"k": 1})
    records = json.loads((tmp_path / "i" / "search.json").read_text())["files"]
    assert records[LISTS_FILE]["size"] == (tmp_path / "i" / LISTS_FILE).stat().st_size
    assert index_dir_problems(tmp_path / "i") == []
    with open(tmp_path / "i" / LISTS_FILE, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    assert any(LISTS_FILE in p and "sha256" in p for p in index_dir_problems(tmp_path / "i"))


def _jobs(*args):
    return subprocess.run([sys.executable, "-m", "claid.index.ondisk_jobs", *map(str, args)], cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)


def test_separate_jobs_build_a_store_index_that_opens_like_any_index_dir(tmp_path):
    from claid.index.index_dir_check import index_dir_problems
    from claid.index.search_table import load_search_table, region_table
    from claid.store.generated import write_synthetic_store

    store = write_synthetic_store(str(tmp_path / "store"), n_images=100, regions_per_image=30, dim=32)
    work, sets = tmp_path / "work", [f"--set={k}={v}" for k, v in SETTINGS.items() if k != "seed"]
    assert _jobs("train", tmp_path / "store", work,
                 "--parts", 2, "--seed", 3, *sets).returncode == 0
    jobs = [subprocess.Popen([sys.executable, "-m", "claid.index.ondisk_jobs", "part",
                              str(tmp_path / "store"), str(work), str(part)], cwd=ROOT,
                             env={**os.environ, "OMP_NUM_THREADS": "1"}) for part in range(2)]
    assert [job.wait(timeout=300) for job in jobs] == [0, 0]
    assert "kept" in _jobs("part", tmp_path / "store", work, 1).stdout
    merged = _jobs("merge", tmp_path / "store", work, tmp_path / "index")
    assert merged.returncode == 0, merged.stderr
    assert index_dir_problems(tmp_path / "index") == []
    meta, region_image, _ = load_search_table(tmp_path / "index")
    assert len(region_image) == 3000 and len(meta["image_ids"]) == 100
    table = region_table(store, None)
    one_piece = build_from_table(table, **SETTINGS)
    _same_results(RegionIndex.load(tmp_path / "index"), one_piece, table.gather(np.arange(0, 3000, 75)))

    other = write_synthetic_store(str(tmp_path / "other"), n_images=100, regions_per_image=30, dim=32,
                                  seed=1)
    refused = _jobs("part", tmp_path / "other", work, 0)
    assert refused.returncode == 2 and refused.stderr.startswith("error: ") and "another region store" in refused.stderr
    assert other.num_regions == 3000


def test_an_index_built_without_a_folder_leaves_none_behind(vectors, one_piece, tmp_path, monkeypatch):
    import gc
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where mkdtemp creates its folder
    index = build_ondisk_index(vectors, parts=2, **SETTINGS)  # as the global baseline builds it
    (work,) = tmp_path.glob("claid-ondisk-*")
    assert (work / LISTS_FILE).is_file()
    _same_results(index, one_piece, vectors[:10])
    del index
    gc.collect()
    assert not work.exists()


def test_on_disk_lists_that_index_json_does_not_declare_are_refused(vectors, tmp_path):
    build_ondisk_index(vectors, parts=2, work_dir=tmp_path / "work", **SETTINGS).save(tmp_path / "i")
    meta_path = tmp_path / "i" / "index.json"
    meta = json.loads(meta_path.read_text())
    meta.pop("lists")
    meta_path.write_text(json.dumps(meta))
    # FAISS would map whatever file index.faiss names; claid maps only its own folder's
    with pytest.raises((ValueError, RuntimeError)):
        RegionIndex.load(tmp_path / "i")


_RANK = """
import json, sys
import numpy as np
import torch.distributed as dist
from claid.index.ondisk_build import ArrayTable, build_part, merge_parts, train_parts
vectors, work, rank, init, settings = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
table = ArrayTable(np.load(vectors, mmap_mode="r"))
if rank == 0:
    train_parts(table, work, 2, **json.loads(settings))
dist.barrier()
build_part(table, work, rank)
dist.barrier()
if rank == 0:
    merge_parts(work).save(work + "/index")
dist.destroy_process_group()
"""


def test_two_gloo_ranks_build_one_part_each(vectors, one_piece, tmp_path):
    pytest.importorskip("torch.distributed")
    np.save(tmp_path / "vectors.npy", vectors)
    work, init = tmp_path / "work", f"file://{tmp_path}/rendezvous"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ranks = [subprocess.Popen([sys.executable, "-c", _RANK, str(tmp_path / "vectors.npy"), str(work),
                               str(rank), init, json.dumps(SETTINGS)], cwd=ROOT, env=env)
             for rank in range(2)]
    assert [rank.wait(timeout=300) for rank in ranks] == [0, 0]
    _same_results(RegionIndex.load(work / "index"), one_piece, vectors[:40])
