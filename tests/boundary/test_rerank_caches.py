"""Re-ranking caches are strangers' files too: a record that lists nothing is a
damaged record, a file the records do not list is never read, and a pickle where an
array belongs means a rebuild (None, warned), not a crash."""

import json

import numpy as np
import pytest
from scipy import sparse

from claid.checksums import file_record
from claid.index import build_index
from claid.index.search_table import RegionTable
from claid.rerank import cache

KEY = {"source": {"store": "abc"}, "dba": {"n": 3}}
DESCRIPTOR = {"_target_": "somewhere.Descriptor", "dim": 8}


def _offline(tmp_path, n=6):
    matrix = sparse.random(n, n, density=0.5, format="csr", random_state=0, dtype=np.float32)
    directory = tmp_path / "diffusion-x"
    cache.save_offline(directory, matrix, KEY, {})
    return directory, n


def _rewrite(path, change):
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def test_an_intact_offline_cache_is_reused(tmp_path):
    directory, n = _offline(tmp_path)
    assert cache.load_offline(directory, KEY, n).shape == (n, n)


def test_emptied_file_records_do_not_turn_off_the_checksum_check(tmp_path):
    directory, n = _offline(tmp_path)
    data = np.load(directory / "offline_data.npy")
    np.save(directory / "offline_data.npy", data[::-1].copy())  # same size, other content
    _rewrite(directory / cache.DIFFUSION_META, lambda meta: meta.update(files={}))
    with pytest.warns(UserWarning, match="records \\[\\], not the offline files"):
        assert cache.load_offline(directory, KEY, n) is None


def _dba_dir(tmp_path, factory):
    x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    boxes = np.tile(np.array([0, 0, 4, 4], np.float32), (300, 1))
    table = RegionTable(None, x, np.arange(300) // 10, boxes, [f"img{i}" for i in range(30)], 8)
    index = build_index(table, factory=factory, whitening="none")
    directory = tmp_path / "index-dba-x"
    cache.save_dba(directory, index, x, table, DESCRIPTOR, KEY)
    return directory, x


def test_an_unrecorded_vectors_file_in_a_dba_dir_is_not_used(tmp_path):
    directory, x = _dba_dir(tmp_path, "Flat")  # a flat DBA dir keeps no vectors file
    np.save(directory / cache.DBA_VECTORS, np.zeros_like(x))
    with pytest.warns(UserWarning, match="not recorded in its search.json"):
        assert cache.load_dba(directory, KEY) is None


def test_a_pickle_where_the_dba_vectors_belong_is_a_rebuild_not_a_crash(tmp_path):
    directory, _ = _dba_dir(tmp_path, "IVF4,Flat")
    index, vectors = cache.load_dba(directory, KEY)
    assert vectors is not None and vectors.shape == (300, 8)
    path = directory / cache.DBA_VECTORS
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    # the record rewritten to match, as whoever replaced the file could do
    _rewrite(directory / "search.json", lambda meta: meta["files"].update({cache.DBA_VECTORS: file_record(path)}))
    with pytest.warns(UserWarning, match="not a plain array"):
        assert cache.load_dba(directory, KEY) is None
