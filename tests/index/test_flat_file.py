"""The index stage writes a flat index straight to its file, chunk by chunk: the
file is FAISS's own format, the build holds no in-memory copy of the vectors, and
the index searches exactly like one built in memory."""

import os
import subprocess
import sys
import textwrap

import faiss
import numpy as np
import pytest

from claid.index import RegionIndex, build_index
from claid.index.flat_file import flat_header, write_flat_index
from claid.index.search_table import region_table
from claid.index.whitening import l2_normalize
from claid.store.generated import write_synthetic_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_synthetic_store(str(tmp_path_factory.mktemp("store") / "s"), n_images=400,
                                 regions_per_image=6, dim=48, shard_size=90)


def test_the_header_is_what_faiss_writes_before_the_rows():
    index = faiss.IndexFlatIP(5)
    index.add(np.arange(15, dtype=np.float32).reshape(3, 5))
    serialised = bytes(faiss.serialize_index(index))
    assert serialised == flat_header(5, 3) + np.arange(15, dtype="<f4").tobytes()


@pytest.mark.parametrize("settings", [{"factory": "Flat"},
                                      {"factory": "Flat", "whitening": "database", "whitening_dim": 20}])
def test_a_flat_index_built_to_a_file_equals_the_in_memory_build(store, tmp_path, settings):
    table = region_table(store, store.whole_image_vectors())
    streamed = build_index(table, add_block=100, flat_file=tmp_path / "flat.tmp", **settings)
    assert streamed.mapped and streamed.pending_file == tmp_path / "flat.tmp"
    in_memory = build_index(table, add_block=100, **settings)
    np.testing.assert_array_equal(streamed.database_vectors(), in_memory.database_vectors())
    queries = table.gather(np.arange(0, table.n_rows, 53))
    for a, b in zip(streamed.search(queries, 10), in_memory.search(queries, 10)):
        np.testing.assert_array_equal(a, b)
    saved = streamed.save(tmp_path / "index")  # moves the file into the dir
    assert not (tmp_path / "flat.tmp").exists() and streamed.pending_file is None
    reloaded = RegionIndex.load(saved)
    np.testing.assert_array_equal(reloaded.database_vectors(), in_memory.database_vectors())


def test_a_short_or_misshapen_stream_leaves_no_file(tmp_path):
    rows = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="held 4 rows"):
        write_flat_index(tmp_path / "a", 3, 5, [rows])
    with pytest.raises(ValueError, match="does not fit"):
        write_flat_index(tmp_path / "b", 3, 4, [np.ones((4, 2), np.float32)])
    assert not os.listdir(tmp_path)
    with pytest.raises(ValueError, match="RegionTable"):
        build_index(rows, flat_file=tmp_path / "c")


_CHILD = textwrap.dedent("""
    import sys, numpy as np
    from claid.index import build_index
    from claid.index.search_table import region_table
    from claid.store import RegionStore
    table = region_table(RegionStore.open(sys.argv[1]), None)
    def anon():
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssAnon"))
    before = anon()
    flat_file = sys.argv[2] if len(sys.argv) > 2 else None
    index = build_index(table, add_block=2048, flat_file=flat_file)
    print(index.ntotal, anon() - before)
""")


def test_the_streamed_build_holds_no_copy_of_the_collection(tmp_path):
    store = write_synthetic_store(str(tmp_path / "big"), n_images=2000, regions_per_image=20,
                                  dim=512, shard_size=500)  # float32 index: 82 MB
    size = store.num_regions * 512 * 4
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    grown = {}
    for name, extra in (("file", [str(tmp_path / "flat.tmp")]), ("memory", [])):
        out = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "big"), *extra],
                             capture_output=True, text=True, env=env, check=True).stdout.split()
        assert int(out[0]) == store.num_regions
        grown[name] = int(out[1]) * 1024
    assert grown["memory"] > 0.9 * size  # the in-memory build holds the index
    assert grown["file"] < 0.2 * size, f"streamed build grew RssAnon by {grown['file'] / size:.2f} x"


def test_the_index_stage_returns_the_flat_index_mapped_from_its_dir(store, tmp_path):
    from omegaconf import OmegaConf

    from claid.index.index_stage import IndexSettings, index_stage

    node = OmegaConf.to_container(OmegaConf.load("conf/index/flat.yaml"))
    settings = IndexSettings(node={k: v for k, v in node.items() if k != "k"}, seed=0,
                             descriptor={"name": "test"})
    table = region_table(store, None)
    index, index_dir = index_stage(settings, table, {"regions": "s"}, tmp_path)
    assert index.mapped and index.pending_file is None  # moved into the dir, not copied
    assert not [p for p in tmp_path.iterdir() if ".faiss.tmp-" in p.name]
    reused, _ = index_stage(settings, table, {"regions": "s"}, tmp_path)
    assert reused.mapped
    np.testing.assert_array_equal(index.database_vectors(), reused.database_vectors())
    loaded = RegionIndex.load(index_dir)  # held: database_vectors() is a view into it
    np.testing.assert_array_equal(loaded.database_vectors(), l2_normalize(table.vectors()))
