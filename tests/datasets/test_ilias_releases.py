"""ILIAS as both official downloads leave it (generated: small JPEGs in tar shards), images
read inside the shards, mini-ILIAS by an id list, and the errors for missing distractors."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from claid.datasets import DatasetFormatError, DatasetNotFoundError
from claid.datasets.ilias import load_ilias, official_image_id
from claid.evaluation.protocols import resolve_protocol
from claid.images import ImageError, displayed_size, load_image

INSTANCES = ("bold_bimp_000", "zippy_zootlenibble_001")


def _jpeg(seed: int, size=(128, 96)) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


def write_shard(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _distractor_shards(folder: Path, pattern: str, n_shards=2, per_shard=3) -> list[str]:
    keys = []
    for s in range(n_shards):
        members = {}
        for j in range(per_shard):
            key = f"{8800 + 10 * s + j}"
            members[f"{key}.jpg"] = _jpeg(100 + 10 * s + j)
            members[f"{key}.json"] = b"{}"  # side files are not images
            keys.append(key)
        write_shard(folder / pattern.format(s), members)
    return keys


@pytest.fixture
def hf_release(tmp_path):
    """The Hugging Face layout: core and mini-ILIAS distractors as WebDataset shards."""
    queries, texts, db = {}, {}, {}
    for i, inst in enumerate(INSTANCES):
        queries[f"{inst}/query/Q{i:03d}_00.jpg"] = _jpeg(i)
        queries[f"{inst}/query/Q{i:03d}_00.bbox.json"] = json.dumps([[4, 5, 20, 10]] if i == 0 else
                                                                    [[1, 1, 5, 5], [30, 20, 10, 10]]).encode()  # fmt: skip
        texts[f"{inst}/query/T{i:03d}.txt"] = f"a very particular object number {i}\n".encode()
        for z in range(2):
            db[f"{inst}/pos/P{i:03d}_{z:02d}.jpg"] = _jpeg(10 + 2 * i + z)
            db[f"{inst}/pos/P{i:03d}_{z:02d}.bbox.json"] = b"[[0, 0, 8, 8]]"
            db[f"{inst}/pos/P{i:03d}_{z:02d}.download_url.txt"] = b"https://example.org/x.jpg"
    write_shard(tmp_path / "ilias-core-queries-img-000000.tar", queries)
    write_shard(tmp_path / "ilias-core-queries-text-000000.tar", texts)
    write_shard(tmp_path / "ilias-core-db-000000.tar", db)
    _distractor_shards(tmp_path, "mini_ilias_yfcc100m-{:06d}.tar")
    return tmp_path


@pytest.fixture
def script_release(tmp_path, image_writer):
    """The download script's layout: ilias_core/ folder, YFCC100M as tar shards."""
    for i, inst in enumerate(INSTANCES):
        base = tmp_path / "ilias_core" / inst
        image_writer(base / "query" / f"Q{i:03d}_00.jpg", 96, 128)
        (base / "query" / f"Q{i:03d}_00_bbox.txt").write_text("4 5 20 10\n")
        (base / "query" / f"T{i:03d}.txt").write_text(f"object {i}\n")
        for z in range(3):
            image_writer(base / "pos" / f"P{i:03d}_{z:02d}.jpg", 96, 128)
            (base / "pos" / f"P{i:03d}_{z:02d}_bbox.txt").write_text("2 2 40 30\n")
    (tmp_path / "image_ids").mkdir()
    _distractor_shards(tmp_path / "yfcc100m", "{:06d}.tar", n_shards=3, per_shard=4)
    return tmp_path


def _every_image_decodes(bench):
    for image in bench.database + [q.image for q in bench.queries if q.image]:
        picture = load_image(bench.path(image))
        assert picture.mode == "RGB" and displayed_size(bench.path(image)) == picture.size[::-1]


def test_hugging_face_shards_as_downloaded(hf_release):
    bench = load_ilias(hf_release)
    image_q = [q for q in bench.queries if q.image is not None]
    text_q = [q for q in bench.queries if q.text is not None]
    assert [q.qid for q in image_q] == ["bold_bimp_000/Q000_00", "zippy_zootlenibble_001/Q001_00"]
    assert image_q[0].image == "ilias-core-queries-img-000000.tar/bold_bimp_000/query/Q000_00"
    assert image_q[0].box == (4.0, 5.0, 24.0, 15.0) and image_q[1].box == (1.0, 1.0, 40.0, 30.0)
    assert [q.text for q in text_q] == ["a very particular object number 0", "a very particular object number 1"]
    assert image_q[0].positives == [f"ilias-core-db-000000.tar/bold_bimp_000/pos/P000_0{z}" for z in (0, 1)]
    assert len(bench.database) == 4 + 6 and "mini_ilias_yfcc100m-000001.tar/8812" in bench.database
    np.testing.assert_array_equal(bench.gt_boxes[image_q[0].positives[0]], [[0, 0, 8, 8]])
    p = bench.protocol
    assert p["layout"] == "Hugging Face shards" and p["distractors"] == "mini_ilias_yfcc100m"
    assert p["n_distractors"] == 6 and p["ties"] == "pooled" and p["core_only"] is False
    assert resolve_protocol(p).ties == "pooled"
    assert [q.extra["official_id"] for q in image_q][0] == "bold_bimp_000/query/Q000_00.jpg"
    assert official_image_id(image_q[0].positives[0]) == "bold_bimp_000/pos/P000_00.jpg"
    assert official_image_id("mini_ilias_yfcc100m-000001.tar/8812") == "mini_ilias_yfcc100m-000001.tar/8812"
    _every_image_decodes(bench)
    assert (hf_release / "ilias-core-db-000000.tar.index.json").is_file()  # built once, beside it


def test_mini_ilias_by_the_official_id_list(hf_release):
    ids = hf_release / "mini_ilias_yfcc100m_ids.txt"
    ids.write_text("8800\n8811\nmini_ilias_yfcc100m-000001.tar/8812\n99999\n")
    bench = load_ilias(hf_release, distractor_ids=ids)
    assert bench.database[4:] == ["mini_ilias_yfcc100m-000000.tar/8800", "mini_ilias_yfcc100m-000001.tar/8811",
                                  "mini_ilias_yfcc100m-000001.tar/8812"]  # fmt: skip
    assert bench.protocol["n_distractor_ids_listed"] == 4 and bench.protocol["n_distractors_found"] == 6
    ids.write_text("1\n2\n")
    with pytest.raises(DatasetFormatError, match="none of the 2 ids") as err:
        load_ilias(hf_release, distractor_ids=ids)
    assert "\n" not in str(err.value)


def test_download_script_layout_with_yfcc100m_shards(script_release):
    bench = load_ilias(script_release, queries="image")
    assert len(bench.queries) == 2 and bench.queries[0].image == "ilias_core/bold_bimp_000/query/Q000_00.jpg"
    distractors = bench.database[6:]
    assert len(distractors) == 12 and distractors[0] == "yfcc100m/000000.tar/8800"
    p = bench.protocol
    assert p["layout"] == "download script (ilias_core/)" and p["distractor_source"] == "tar shards"
    assert p["distractors"] == "yfcc100m" and p["n_distractor_shards"] == 3
    assert official_image_id(distractors[0]) == "000000.tar/8800"
    assert official_image_id(bench.queries[0].positives[0]) == "bold_bimp_000/pos/P000_00.jpg"
    _every_image_decodes(bench)
    (script_release / "ids.txt").write_text("000001.tar/8810\n8821\n")
    mini = load_ilias(script_release, distractor_ids=script_release / "ids.txt")
    assert mini.database[6:] == ["yfcc100m/000001.tar/8810", "yfcc100m/000002.tar/8821"]


def test_a_missing_or_empty_distractor_set_is_a_one_line_error(script_release, tmp_path):
    write_shard(script_release / "empty" / "000000.tar", {"readme.txt": b"no images"})
    with pytest.raises(DatasetFormatError, match="holds no image") as err:
        load_ilias(script_release, distractors="empty")
    assert "\n" not in str(err.value) and "distractors=null" in str(err.value)
    (script_release / "nothing").mkdir()
    with pytest.raises(DatasetFormatError, match="holds no image"):
        load_ilias(script_release, distractors="nothing")
    with pytest.raises(DatasetNotFoundError, match="no folder") as err:
        load_ilias(script_release, distractors="mini_ilias_yfcc100m")
    assert "\n" not in str(err.value)
    for shard in (script_release / "yfcc100m").glob("*"):
        shard.unlink()
    (script_release / "yfcc100m").rmdir()
    with pytest.raises(DatasetNotFoundError, match="no distractors under") as err:
        load_ilias(script_release)  # auto finds nothing: never a silent core-only run
    assert "\n" not in str(err.value)
    core = load_ilias(script_release, distractors=None)
    assert core.protocol["core_only"] is True and core.protocol["n_distractors"] == 0
    assert len(core.database) == 6


def test_hostile_member_names_are_refused_when_indexed(script_release):
    for name in ("../escape.jpg", "/etc/passwd.jpg", "a/../../b.jpg"):
        write_shard(script_release / "yfcc100m" / "000009.tar", {"ok.jpg": _jpeg(1), name: _jpeg(2)})
        with pytest.raises(DatasetFormatError, match="unsafe name"):
            load_ilias(script_release)


def test_a_shard_changed_after_indexing_is_named_not_misread(script_release):
    bench = load_ilias(script_release)
    image = "yfcc100m/000001.tar/8811"
    from claid.datasets import tar_shards

    before = load_image(bench.path(image))
    tar_shards._OPEN.clear()  # its index dropped from memory (many shards): still checked
    shard = script_release / "yfcc100m" / "000001.tar"
    write_shard(shard, {"8811.jpg": _jpeg(999, size=(64, 64)), "8800.jpg": _jpeg(5)})  # replaced
    os.utime(shard, ns=(1, 1))
    with pytest.raises(ImageError, match="000001.tar: changed since it was indexed"):
        load_image(bench.path(image))
    again = load_ilias(script_release)  # a new listing re-indexes it
    assert load_image(again.path(image)).size == (64, 64) != before.size
    with open(shard, "r+b") as f:  # truncated
        f.truncate(700)
    with pytest.raises(DatasetFormatError, match="000001.tar"):
        load_ilias(script_release)


def test_a_stored_index_is_reused_only_while_it_matches(script_release):
    from claid.datasets import tar_shards

    shard = script_release / "yfcc100m" / "000000.tar"
    first = tar_shards.shard_index(shard)
    stored = shard.with_name(shard.name + tar_shards.INDEX_SUFFIX)
    record = json.loads(stored.read_text())
    assert record["size"] == shard.stat().st_size and len(record["members"]) == 8
    tar_shards._OPEN.clear()
    record["members"][0][1] += 1  # a stranger's index: offsets are not trusted blindly
    record["mtime_ns"] += 1
    stored.write_text(json.dumps(record))
    again = tar_shards.shard_index(shard)
    assert again.members == first.members
    assert tar_shards.read_member(shard / "8801") == _jpeg(1 + 100)


def _official_ids_folder(folder: Path, bench) -> None:
    """image_ids/ and misc/taxonomy.json as the official evaluation reads them."""
    ids = folder / "image_ids"
    ids.mkdir(parents=True, exist_ok=True)
    image_q = [q.extra["official_id"] for q in bench.queries if q.image is not None]
    (ids / "image_query_ids.txt").write_text("".join(f"{q},0\n" for q in image_q))
    text_q = [f"{inst}/query/T{i:03d}.txt" for i, inst in enumerate(INSTANCES)]
    (ids / "text_query_ids.txt").write_text("".join(f"{q}\n" for q in text_q))
    positives = sorted({official_image_id(p) for q in bench.queries for p in q.positives})
    (ids / "positive_ids.txt").write_text("".join(f"{p},0.1,5\n" for p in positives))
    (folder / "misc").mkdir(exist_ok=True)
    (folder / "misc" / "taxonomy.json").write_text(json.dumps({"product": {"food": {"cake": list(INSTANCES)}}}))


@pytest.mark.slow
@pytest.mark.parametrize("release", ["hf_release", "script_release"])
def test_a_run_on_each_layout_and_the_official_script_on_its_output(release, request, compose_cfg, tmp_path):
    import pickle
    import subprocess
    import sys

    from claid.pipeline import run

    root = request.getfixturevalue(release)
    cfg = compose_cfg("dataset=ilias", f"dataset.root={root}", "dataset.queries=image", "backbone=dino_vits16",
                      "backbone.pretrained=false", "descriptor.pretrained=false", "tracking=none")  # fmt: skip
    result = run(cfg, run_dir=tmp_path / "run")
    bench = load_ilias(root, queries="image")
    assert result.report["counts"]["queries"] == 2 and result.metrics["count/images"] == len(bench.database)

    knn = tmp_path / "run" / "ilias_knn.json"  # the run writes the official kNN file itself
    assert result.artifacts["official_knn"] == str(knn)
    official = tmp_path / "official"
    _official_ids_folder(official, bench)
    script = Path(__file__).parents[1] / "reference" / "ilias" / "evaluate.py"
    subprocess.run([sys.executable, str(script), "--dataset_dir", str(official), "--similarity_file", str(knn),
                    "--result_file", str(official / "r.pkl")], cwd=official, check=True, capture_output=True)  # fmt: skip
    report = pickle.loads((official / "r.pkl").read_bytes())
    assert abs(report["map"] / 100 - result.metrics["gldv2/mAP-at-1000"]) <= 1e-9


def test_mini_is_the_hugging_face_mini_shards_as_they_are(hf_release):
    hf = load_ilias(hf_release, distractor_ids="mini")
    assert len(hf.database) == 4 + 6 and hf.protocol["distractor_ids"].startswith("mini: the")


def test_mini_is_the_official_list_in_image_ids_for_the_download_script_layout(script_release):
    with pytest.raises(DatasetNotFoundError, match="distractor_ids=mini needs") as err:
        load_ilias(script_release, distractor_ids="mini")
    assert "\n" not in str(err.value)
    (script_release / "image_ids" / "mini_ilias_yfcc100m_ids.txt").write_text("8800\n8823\n")
    mini = load_ilias(script_release, distractor_ids="mini")
    assert mini.database[6:] == ["yfcc100m/000000.tar/8800", "yfcc100m/000002.tar/8823"]


def test_members_packed_from_dot_are_keyed_without_it(script_release):
    write_shard(script_release / "yfcc100m" / "000009.tar", {"./77.jpg": _jpeg(7), "./77.json": b"{}"})
    bench = load_ilias(script_release)
    assert bench.database[-1] == "yfcc100m/000009.tar/77"
    assert load_image(bench.path("yfcc100m/000009.tar/77")).size == (128, 96)
