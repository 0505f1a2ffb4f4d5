"""run.py writes queries.json: per-query figures whose mean is the run's metric and a
mark for every saved result; the explorer's reader checks it as a stranger's file."""

import json
import shutil

import pytest

from claid.serve.run_records import RunRecordError, load_run
from tests.serve.run_dirs import make_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("runs"))


def test_a_synthetic_run_records_every_querys_figures_and_marks(runs):
    run_a, _ = runs
    report = json.loads((run_a / "metrics.json").read_text())
    records = json.loads((run_a / "queries.json").read_text())
    saved = json.loads((run_a / "rankings.json").read_text())
    assert records["family"] == "lab" and records["headline"] == "mAP-all"
    assert [q["qid"] for q in records["queries"]] == [q["qid"] for q in saved["queries"]]
    for key in records["metrics"]:
        values = [q["values"][key] for q in records["queries"]]
        assert sum(values) / len(values) == pytest.approx(report["metrics"][f"lab/{key}"], abs=1e-12)
    for entry, ranked in zip(records["queries"], saved["queries"]):
        assert sorted(r["image"] for r in entry["results"]) == sorted(r["image"] for r in ranked["results"])
        relevant = {r["image"] for r in ranked["results"] if r["relevant"]}
        for result in entry["results"]:
            mark = result["marks"]["default"]
            assert mark in ("positive", "negative")  # lab on synthetic: no junk, query images never ranked
            assert (mark == "positive") == (result["image"] in relevant)
    loaded = load_run(run_a)
    assert loaded.summary()["headline_value"] == pytest.approx(report["metrics"]["lab/mAP-all"])


def test_a_run_dir_from_before_the_records_says_to_re_run(runs, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(runs[0], old)
    (old / "queries.json").unlink()
    with pytest.raises(RunRecordError, match="re-run it with run.py") as info:
        load_run(old)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("damage, message", [
    (lambda d: d.update(schema_version=99), "schema_version 99, this claid reads 1"),
    (lambda d: d["queries"][0]["values"].update({"mAP-all": 1.5}), "not a fraction in"),
    (lambda d: d["queries"][0]["values"].update({"mAP-all": "0.5"}), "not a fraction in"),
    (lambda d: d["queries"][0]["results"][0]["marks"].update(default="great"), "'marks' must give one of"),
    (lambda d: d["queries"][0]["results"][0].update(box=[1, 2]), "'box' is not 4 numbers"),
    (lambda d: d["queries"][1].update(qid=d["queries"][0]["qid"]), "appears twice"),
    (lambda d: d["queries"][0]["values"].update({"mAP-all": 0.999 - d["queries"][0]["values"]["mAP-all"] / 2}),
     "the per-query values average"),
    (lambda d: d.update(queries="x"), "'queries' is not a list"),
])
def test_damaged_records_are_refused_with_one_line(runs, tmp_path, damage, message):
    bad = tmp_path / "bad"
    shutil.copytree(runs[0], bad)
    doc = json.loads((bad / "queries.json").read_text())
    damage(doc)
    (bad / "queries.json").write_text(json.dumps(doc))
    with pytest.raises(RunRecordError, match=message) as info:
        load_run(bad)
    assert "\n" not in str(info.value) and "queries.json" in str(info.value)


def test_not_json_and_nan_are_refused(runs, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(runs[0], bad)
    (bad / "queries.json").write_text("{not json")
    with pytest.raises(RunRecordError, match="not valid JSON"):
        load_run(bad)
    text = (runs[0] / "queries.json").read_text().replace('"top": 100', '"top": NaN')
    (bad / "queries.json").write_text(text)
    with pytest.raises(RunRecordError, match="not valid JSON"):
        load_run(bad)
