"""Oxford5k / Paris6k classic gt_files and the revisited pickles."""

from __future__ import annotations

import pickle

import pytest

from claid.datasets import DatasetFormatError, DatasetNotFoundError
from claid.datasets.oxford_paris import load_oxford5k, load_paris6k
from claid.datasets.revisited import load_roxford5k, load_rparis6k
from claid.evaluation.protocols import resolve_protocol


def _write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


@pytest.fixture
def oxford(tmp_path, image_writer):
    for name in ("all_souls_000013", "all_souls_000026", "ashmolean_000000", "radcliffe_000001",
                 "magdalen_000078"):  # fmt: skip
        image_writer(tmp_path / "jpg" / f"{name}.jpg")
    gt = tmp_path / "gt_files"
    _write(gt / "all_souls_1_query.txt", ["oxc1_all_souls_000013 10.5 5.0 30.0 25.5"])
    _write(gt / "all_souls_1_good.txt", ["all_souls_000013", "all_souls_000026"])
    _write(gt / "all_souls_1_ok.txt", ["ashmolean_000000"])
    _write(gt / "all_souls_1_junk.txt", ["radcliffe_000001"])
    _write(gt / "magdalen_1_query.txt", ["oxc1_magdalen_000078 1 2 40 30"])
    _write(gt / "magdalen_1_good.txt", ["magdalen_000078"])
    _write(gt / "magdalen_1_ok.txt", [])
    _write(gt / "magdalen_1_junk.txt", [])
    return tmp_path


def test_oxford_classic_reads_x1y1x2y2_boxes(oxford):
    bench = load_oxford5k(oxford)
    assert [q.qid for q in bench.queries] == ["all_souls_1", "magdalen_1"]
    q = bench.queries[0]
    assert q.image == "jpg/all_souls_000013.jpg"
    # x1 y1 x2 y2, not x y w h (which would give (10.5, 5, 40.5, 30.5)).
    assert q.box == (10.5, 5.0, 30.0, 25.5)
    assert q.positives == ["jpg/all_souls_000013.jpg", "jpg/all_souls_000026.jpg",
                           "jpg/ashmolean_000000.jpg"]  # fmt: skip
    assert q.junk == ["jpg/radcliffe_000001.jpg"]
    # Classic protocol: the query image stays in the database.
    assert q.image in bench.database and len(bench.database) == 5
    p = bench.protocol
    assert p["family"] == "trapezoid" and not p["remove_queries_from_db"] and p["junk"]
    assert p["query"] == "crop" and p["skipped"] == []
    assert resolve_protocol(bench.protocol).family == bench.protocol["family"]


def test_paris_subfolders_and_broken_files(tmp_path, image_writer):
    for landmark, n in (("defense", "000605"), ("defense", "000606"), ("eiffel", "000001")):
        image_writer(tmp_path / "jpg" / "paris" / landmark / f"paris_{landmark}_{n}.jpg")
    broken = tmp_path / "jpg" / "paris" / "louvre" / "paris_louvre_000136.jpg"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\xff\xd8 this is not a jpeg")
    gt = tmp_path / "gt_files"
    _write(gt / "defense_1_query.txt", ["paris_defense_000605 3 4 50 40"])
    _write(gt / "defense_1_good.txt", ["paris_defense_000606", "paris_louvre_000136"])
    _write(gt / "defense_1_ok.txt", [])
    _write(gt / "defense_1_junk.txt", ["paris_eiffel_000001"])
    bench = load_paris6k(tmp_path)
    (q,) = bench.queries
    assert q.image == "jpg/paris/defense/paris_defense_000605.jpg"
    assert q.positives == ["jpg/paris/defense/paris_defense_000606.jpg"]  # broken one left out
    assert bench.protocol["skipped"] == ["jpg/paris/louvre/paris_louvre_000136.jpg"]
    assert "jpg/paris/louvre/paris_louvre_000136.jpg" not in bench.database


def test_classic_unknown_image_names_the_line(oxford):
    _write(oxford / "gt_files" / "magdalen_1_good.txt", ["magdalen_000078", "nowhere_000001"])
    with pytest.raises(DatasetFormatError, match="magdalen_1_good.txt:2"):
        load_oxford5k(oxford)


def test_classic_missing_ground_truth(tmp_path, image_writer):
    image_writer(tmp_path / "jpg" / "a.jpg")
    with pytest.raises(DatasetNotFoundError, match="gt_files"):
        load_oxford5k(tmp_path)


def _revisited(root, save, name):
    imlist = ["all_souls_000026", "ashmolean_000000", "radcliffe_000001", "magdalen_000001"]
    qimlist = ["all_souls_000013", "magdalen_000078"]
    for n in imlist + qimlist:
        save(root / "jpg" / f"{n}.jpg")
    gnd = [
        {"bbx": [10.5, 5.0, 30.0, 25.5], "easy": [0], "hard": [1], "junk": [2]},
        {"bbx": [1, 2, 40, 30], "easy": [], "hard": [3], "junk": []},
    ]
    with open(root / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, f)
    return root


@pytest.mark.parametrize(
    "name, loader", [("roxford5k", load_roxford5k), ("rparis6k", load_rparis6k)]
)
def test_revisited_pickle(tmp_path, image_writer, name, loader):
    bench = loader(_revisited(tmp_path, image_writer, name))
    assert bench.name == name
    assert bench.database == [f"jpg/{n}.jpg" for n in
                              ("all_souls_000026", "ashmolean_000000", "radcliffe_000001",
                               "magdalen_000001")]  # fmt: skip
    q0, q1 = bench.queries
    assert q0.image == "jpg/all_souls_000013.jpg" and q0.box == (10.5, 5.0, 30.0, 25.5)
    assert q0.extra == {"easy": ["jpg/all_souls_000026.jpg"], "hard": ["jpg/ashmolean_000000.jpg"],
                        "junk": ["jpg/radcliffe_000001.jpg"]}  # fmt: skip
    assert q0.positives == ["jpg/all_souls_000026.jpg", "jpg/ashmolean_000000.jpg"]  # medium
    assert q1.extra["easy"] == [] and q1.positives == ["jpg/magdalen_000001.jpg"]
    assert all(q.image not in bench.database for q in bench.queries)
    assert bench.protocol["family"] == "revisited" and bench.protocol["remove_queries_from_db"]
    assert resolve_protocol(bench.protocol).family == bench.protocol["family"]


def test_revisited_bad_index_and_missing_pickle(tmp_path, image_writer):
    root = _revisited(tmp_path, image_writer, "roxford5k")
    with open(root / "gnd_roxford5k.pkl", "rb") as f:
        cfg = pickle.load(f)
    cfg["gnd"][1]["hard"] = [4]
    with open(root / "gnd_roxford5k.pkl", "wb") as f:
        pickle.dump(cfg, f)
    with pytest.raises(DatasetFormatError, match=r"gnd\[1\]\.hard"):
        load_roxford5k(root)
    with pytest.raises(DatasetNotFoundError, match="revisitop"):
        load_rparis6k(root)
