"""Every accepted Oxford / Paris layout loads the same benchmark; none gives one full message."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

from claid.datasets import DatasetNotFoundError
from claid.datasets.oxford_paris import load_oxford5k, load_paris6k
from claid.datasets.revisited import load_roxford5k, load_rparis6k

OXFORD_IMAGES = ["all_souls_000013", "all_souls_000026", "ashmolean_000000", "radcliffe_000001",
                 "magdalen_000078"]  # fmt: skip
GT_FILES = {
    "all_souls_1_query.txt": ["oxc1_all_souls_000013 10.5 5.0 30.0 25.5"],
    "all_souls_1_good.txt": ["all_souls_000013", "all_souls_000026"],
    "all_souls_1_ok.txt": ["ashmolean_000000"],
    "all_souls_1_junk.txt": ["radcliffe_000001"],
    "magdalen_1_query.txt": ["oxc1_magdalen_000078 1 2 40 30"],
    "magdalen_1_good.txt": ["magdalen_000078"],
    "magdalen_1_ok.txt": [],
    "magdalen_1_junk.txt": [],
}


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def _oxford(root: Path, image_writer, images: str, gt: str) -> Path:
    for name in OXFORD_IMAGES:
        image_writer(root / images / f"{name}.jpg")
    for fname, lines in GT_FILES.items():
        _write(root / gt / fname, lines)
    return root


def _stems(paths):
    return [Path(p).stem for p in paths]


def _summary(bench):
    """What a layout must not change: queries, boxes, ground truth by image name."""
    return [(q.qid, _stems([q.image]), q.box, _stems(q.positives), _stems(q.junk)) for q in bench.queries]


@pytest.fixture
def reference(tmp_path, image_writer):
    return _summary(load_oxford5k(_oxford(tmp_path / "claid", image_writer, "jpg", "gt_files")))


@pytest.mark.parametrize(
    "images, gt",
    [
        ("oxbuild_images", "gt_files_170407"),  # the VGG archives, unpacked under their names
        ("images", "gt"),  # lab copies
        ("images", "lab"),
        ("jpg", "gt"),  # a mix of two accepted names
    ],
)
def test_classic_oxford_layouts_load_the_same_benchmark(tmp_path, image_writer, reference, images, gt):
    bench = load_oxford5k(_oxford(tmp_path / "copy", image_writer, images, gt))
    assert _summary(bench) == reference
    assert all(i.startswith(f"{images}/") for i in bench.database) and len(bench.database) == 5
    assert bench.protocol["layout"] == f"{images}/ + {gt}/"


def test_classic_paris_archive_layout(tmp_path, image_writer):
    # paris_1.tgz / paris_2.tgz unpack to paris/<landmark>/, paris_120310.tgz to text files
    for landmark, n in (("defense", "000605"), ("defense", "000606"), ("eiffel", "000001")):
        image_writer(tmp_path / "paris" / landmark / f"paris_{landmark}_{n}.jpg")
    gt = tmp_path / "paris_120310"
    _write(gt / "defense_1_query.txt", ["paris_defense_000605 3 4 50 40"])
    _write(gt / "defense_1_good.txt", ["paris_defense_000606"])
    _write(gt / "defense_1_ok.txt", [])
    _write(gt / "defense_1_junk.txt", ["paris_eiffel_000001"])
    (q,) = load_paris6k(tmp_path).queries
    assert q.image == "paris/defense/paris_defense_000605.jpg"
    assert q.positives == ["paris/defense/paris_defense_000606.jpg"]
    assert q.junk == ["paris/eiffel/paris_eiffel_000001.jpg"]


def _classic_pickle(path: Path) -> None:
    # cirtorch's classic gnd: the query images are in imlist, "ok" merges good and ok
    imlist = OXFORD_IMAGES
    gnd = [
        {"bbx": [10.5, 5.0, 30.0, 25.5], "ok": [0, 1, 2], "junk": [3]},
        {"bbx": [1, 2, 40, 30], "ok": [4], "junk": []},
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({"imlist": imlist, "qimlist": ["all_souls_000013", "magdalen_000078"], "gnd": gnd}, f)


@pytest.mark.parametrize("images, pkl", [("jpg", "gnd_oxford5k.pkl"), ("images", "gt/gnd_oxford5k.pkl")])
def test_classic_oxford_cirtorch_pickle(tmp_path, image_writer, reference, images, pkl):
    for name in OXFORD_IMAGES:
        image_writer(tmp_path / images / f"{name}.jpg")
    _classic_pickle(tmp_path / pkl)
    bench = load_oxford5k(tmp_path)
    # same ground truth; the pickle has no landmark query names, so ids are image names
    assert [s[1:] for s in _summary(bench)] == [s[1:] for s in reference]
    assert [q.qid for q in bench.queries] == ["all_souls_000013", "magdalen_000078"]
    assert bench.protocol["layout"] == f"{images}/ + {pkl}"


def _revisited(root: Path, image_writer, images: str, pkl: str, name: str, nested: bool = False) -> Path:
    imlist = ["all_souls_000026", "ashmolean_000000", "radcliffe_000001", "magdalen_000001"]
    qimlist = ["all_souls_000013", "magdalen_000078"]
    for n in imlist + qimlist:
        sub = f"{n.split('_')[0]}/" if nested else ""
        image_writer(root / images / f"{sub}{n}.jpg")
    gnd = [
        {"bbx": [10.5, 5.0, 30.0, 25.5], "easy": [0], "hard": [1], "junk": [2]},
        {"bbx": [1, 2, 40, 30], "easy": [], "hard": [3], "junk": []},
    ]
    (root / pkl).parent.mkdir(parents=True, exist_ok=True)
    with open(root / pkl, "wb") as f:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, f)
    return root


@pytest.mark.parametrize(
    "name, loader, images, pkl, nested",
    [
        ("roxford5k", load_roxford5k, "jpg", "gnd_roxford5k.pkl", False),  # revisitop
        ("roxford5k", load_roxford5k, "oxbuild_images", "gnd_roxford5k.pkl", False),  # VGG archive
        ("roxford5k", load_roxford5k, "images", "gt/gnd_roxford5k.pkl", False),  # lab copy
        ("rparis6k", load_rparis6k, "paris", "gnd_rparis6k.pkl", True),  # paris/<landmark>/
        ("rparis6k", load_rparis6k, "images", "gt/gnd_rparis6k.pkl", False),
    ],
)
def test_revisited_layouts_load_the_same_benchmark(tmp_path, image_writer, name, loader, images, pkl, nested):
    reference = loader(_revisited(tmp_path / "ref", image_writer, "jpg", f"gnd_{name}.pkl", name))
    bench = loader(_revisited(tmp_path / "copy", image_writer, images, pkl, name, nested))
    assert _stems(bench.database) == _stems(reference.database)
    assert _summary(bench) == _summary(reference)
    assert [_stems(q.extra["hard"]) for q in bench.queries] == [
        _stems(q.extra["hard"]) for q in reference.queries
    ]
    assert all((tmp_path / "copy" / i).is_file() for i in bench.database)


@pytest.mark.parametrize(
    "loader, name, expected",
    [
        (load_oxford5k, "oxford5k", ["jpg/", "oxbuild_images/", "images/", "gt_files/", "gt_files_170407/",
                                     "gt/", "gnd_oxford5k.pkl", "gt/gnd_oxford5k.pkl"]),  # fmt: skip
        (load_paris6k, "paris6k", ["jpg/", "paris/", "images/", "gt_files/", "paris_120310/",
                                   "gnd_paris6k.pkl"]),  # fmt: skip
        (load_roxford5k, "roxford5k", ["jpg/", "oxbuild_images/", "images/", "gnd_roxford5k.pkl",
                                       "gt/gnd_roxford5k.pkl"]),  # fmt: skip
        (load_rparis6k, "rparis6k", ["jpg/", "paris/", "images/", "gnd_rparis6k.pkl"]),
    ],
)
def test_no_accepted_layout_lists_every_layout_in_one_message(tmp_path, image_writer, loader, name, expected):
    image_writer(tmp_path / "pictures" / "a.jpg")
    _write(tmp_path / "groundtruth" / "a_1_query.txt", ["a 1 2 3 4"])
    with pytest.raises(DatasetNotFoundError) as info:
        loader(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{name}: ") and "Accepted layouts" in message
    for item in expected:
        assert item in message, item


def test_images_without_ground_truth_say_which_is_missing(tmp_path, image_writer):
    root = _oxford(tmp_path, image_writer, "images", "gt")
    shutil.rmtree(root / "gt")
    with pytest.raises(DatasetNotFoundError, match="no ground truth"):
        load_oxford5k(root)
