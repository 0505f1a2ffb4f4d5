"""A flat index dir is searched from its file: loaded with ``mmap=True`` its vectors
are memory-mapped (page cache, which the kernel can drop), not read into anonymous
memory, and it searches exactly like the index it was saved from."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from claid.index import RegionIndex, search_images

_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from claid.index import RegionIndex
    def anon():
        return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("RssAnon"))
    queries = np.load(sys.argv[2])
    before = anon()
    index = RegionIndex.load(sys.argv[1], mmap=sys.argv[3] == "mmap")
    sims, ids = index.search(queries, 20)
    np.save(sys.argv[4], ids)
    print(anon() - before)
""")


def test_a_memory_mapped_flat_index_costs_no_anonymous_memory(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(40000, 1024)).astype(np.float32)
    built = RegionIndex.build(vectors)
    queries = vectors[::4000] + 0.05
    want_sims, want_ids = built.search(queries, 20)
    size = built.nbytes()  # 164 MB
    built.save(tmp_path / "index")
    np.save(tmp_path / "queries.npy", queries)

    grown = {}
    for mode in ("mmap", "memory"):  # in fresh processes: RssAnon of this one reuses freed memory
        out = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "index"),
                              str(tmp_path / "queries.npy"), mode, str(tmp_path / f"{mode}.npy")],
                             capture_output=True, text=True, check=True)
        grown[mode] = int(out.stdout.split()[-1])
        np.testing.assert_array_equal(np.load(tmp_path / f"{mode}.npy"), want_ids)
    assert grown["mmap"] < 0.2 * size, f"mmap load grew RssAnon by {grown['mmap'] / size:.2f} x the index"
    assert grown["memory"] > 0.8 * size  # the default reads it into memory

    mapped = RegionIndex.load(tmp_path / "index", mmap=True)
    loaded = RegionIndex.load(tmp_path / "index")
    np.testing.assert_array_equal(mapped.search(queries, 20)[0], want_sims)
    image = np.arange(mapped.ntotal) // 10
    boxes = np.zeros((mapped.ntotal, 4), np.float32)
    image_ids = [f"im{i}" for i in range(image.max() + 1)]
    exhaustive = [search_images(index, queries, image, boxes, image_ids, list("abcdefghij"), k=None)
                  for index in (mapped, loaded)]
    for a, b in zip(*exhaustive):
        assert a.images == b.images
        np.testing.assert_array_equal(a.scores, b.scores)


def test_other_index_types_load_the_same_with_mmap(tmp_path):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(3000, 32)).astype(np.float32)
    built = RegionIndex.build(vectors, factory="IVF8,PQ8x4", nprobe=4, whitening="database")
    built.save(tmp_path / "ivf")
    mapped = RegionIndex.load(tmp_path / "ivf", mmap=True)
    queries = vectors[:50]
    np.testing.assert_array_equal(mapped.search(queries, 5)[1], built.search(queries, 5)[1])


def test_a_mapped_index_refuses_to_grow_instead_of_aborting(tmp_path):
    vectors = np.random.default_rng(2).normal(size=(100, 16)).astype(np.float32)
    RegionIndex.build(vectors).save(tmp_path / "flat")
    mapped = RegionIndex.load(tmp_path / "flat", mmap=True)
    with pytest.raises(ValueError, match="memory-mapped"):
        mapped.add(vectors[:3])  # FAISS itself would abort the process
    loaded = RegionIndex.load(tmp_path / "flat")
    loaded.add(vectors[:3])
    assert loaded.ntotal == 103
