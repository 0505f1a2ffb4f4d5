"""The official ILIAS evaluation (tests/reference/ilias, run as a script) scores claid's
kNN file exactly as claid scores the same rankings with ``ties: pooled``, ties included;
``read_official_knn`` applies the official per-query rules."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from claid.evaluation import evaluate
from claid.evaluation.official_knn import official_knn, read_official_knn, write_official_knn
from claid.structures import Benchmark, Query, Ranking

REFERENCE = Path(__file__).parents[1] / "reference" / "ilias" / "evaluate.py"
pytest.importorskip("sklearn")


def _official(image_id: str) -> str:
    """claid id -> official id, as the ILIAS loader maps a folder download."""
    return image_id.removeprefix("ilias_core/").removeprefix("yfcc100m/")


def _ilias_like(rng, n_instances=30, n_distractors=400):
    queries, positives, info = [], [], []
    for i in range(n_instances):
        inst = f"inst_{i:03d}"
        pos = [f"ilias_core/{inst}/pos/P{i:03d}_{j:02d}.jpg" for j in range(rng.integers(1, 9))]
        positives += pos
        info += [(p, rng.random(), int(rng.integers(0, 80))) for p in pos]
        for j in range(rng.integers(1, 3)):
            name = f"Q{i:03d}_{j:02d}.jpg"
            queries.append(Query(image=f"ilias_core/{inst}/query/{name}", box=(0, 0, 8, 8),
                                 positives=list(pos), qid=f"{inst}/{name[:-4]}",
                                 extra={"official_id": f"{inst}/query/{name}"}))  # fmt: skip
        queries.append(Query(image=None, text="a thing", positives=list(pos), qid=f"{inst}/T{i:03d}",
                             extra={"official_id": f"{inst}/query/T{i:03d}.txt"}))  # fmt: skip
    distractors = [f"yfcc100m/00{s}.tar/{s}{j:05d}" for s in range(2) for j in range(n_distractors // 2)]
    protocol = {"family": "gldv2", "k": [100], "ties": "pooled", "junk": False,
                "remove_queries_from_db": True, "query": "crop"}  # fmt: skip
    bench = Benchmark("ilias", "/nowhere", positives + distractors, queries, protocol=protocol)
    return bench, info


def _tied_rankings(rng, bench, length=150, levels=25):
    """Rankings with long runs of equal scores (few score levels), positives planted."""
    rankings = []
    for query in bench.queries:
        pool = np.asarray(bench.database)
        images = list(rng.choice(pool, size=length, replace=False))
        for p in query.positives:  # plant some positives, at random ranks
            if rng.random() < 0.7 and p not in images:
                images[rng.integers(0, length)] = p
        images = list(dict.fromkeys(images))
        scores = np.sort(rng.integers(1, levels, len(images)))[::-1].astype(np.float32) / levels
        rankings.append(Ranking(query.qid, images, scores, np.zeros((len(images), 4), np.float32)))
    return rankings


def _official_dataset(folder: Path, bench, info):
    ids = folder / "image_ids"
    ids.mkdir(parents=True)
    image_queries = [q.extra["official_id"] for q in bench.queries if q.image is not None]
    text_queries = [q.extra["official_id"] for q in bench.queries if q.image is None]
    (ids / "image_query_ids.txt").write_text("".join(f"{q},1\n" for q in image_queries))
    (ids / "text_query_ids.txt").write_text("".join(f"{q}\n" for q in text_queries))
    (ids / "positive_ids.txt").write_text(
        "".join(f"{_official(p)},{s},{c}\n" for p, s, c in info)
    )
    instances = sorted({q.split("/")[0] for q in text_queries})
    (folder / "misc").mkdir()
    taxonomy = {"product": {"food": {"cake": instances[::2]}}, "art": {"sculpture": {"3d": instances[1::2]}}}
    (folder / "misc" / "taxonomy.json").write_text(json.dumps(taxonomy))


def _run_official(folder: Path, knn_file: Path, k: int) -> dict:
    result = folder / "report.pkl"
    subprocess.run(
        [sys.executable, str(REFERENCE), "--dataset_dir", str(folder), "--similarity_file",
         str(knn_file), "--k", str(k), "--result_file", str(result)],
        cwd=folder, check=True, capture_output=True,
    )  # fmt: skip
    with open(result, "rb") as f:
        return pickle.load(f)


def test_the_official_script_scores_claids_file_as_claid_does_ties_included(tmp_path):
    rng = np.random.default_rng(3)
    bench, info = _ilias_like(rng)
    rankings = _tied_rankings(rng, bench)
    assert sum(len(np.unique(r.scores)) < len(r.scores) for r in rankings) == len(rankings)
    k = 100
    knn_file = write_official_knn(tmp_path / "knn.json", rankings, bench, top_k=k, image_id=_official)
    _official_dataset(tmp_path, bench, info)
    report = _run_official(tmp_path, knn_file, k)

    (claid,) = evaluate(rankings, bench, per_query=True)
    assert claid.settings["ties"]["rule"] == "pooled"
    official_ids = {q.qid: q.extra["official_id"] for q in bench.queries}
    ours = {official_ids[qid]: v["mAP-at-100"] for qid, v in claid.settings["per_query"].items()}
    theirs = dict(zip(report["queries"], np.asarray(report["aps"]) / 100))
    assert set(theirs) == set(ours) and len(ours) == len(bench.queries)
    for qid, value in ours.items():
        assert abs(theirs[qid] - value) <= 1e-9, qid
    assert abs(report["map"] / 100 - claid.values["mAP-at-100"]) <= 1e-9

    # the other tie rules do not give the official figures on these rankings
    as_ranked = dict(bench.protocol, ties="as_ranked")
    (plain,) = evaluate(rankings, Benchmark("ilias", "/", bench.database, bench.queries,
                                            protocol=as_ranked), per_query=True)  # fmt: skip
    differ = [q for q, v in plain.settings["per_query"].items()
              if abs(v["mAP-at-100"] - ours[official_ids[q]]) > 1e-9]  # fmt: skip
    assert len(differ) > 10


def test_written_file_keeps_top_k_best_first_with_official_ids():
    rng = np.random.default_rng(0)
    bench, _ = _ilias_like(rng, n_instances=3, n_distractors=40)
    rankings = _tied_rankings(rng, bench, length=30, levels=5)
    knn = official_knn(rankings, bench, top_k=7, image_id=_official)
    assert list(knn) == [q.extra["official_id"] for q in bench.queries]
    for ranking, entries in zip(rankings, knn.values()):
        assert list(entries) == [_official(i) for i in ranking.images[:7]]
        assert list(entries.values()) == [float(s) for s in ranking.scores[:7]]
    with pytest.raises(ValueError, match="two images"):
        official_knn(rankings, bench, image_id=lambda image: "same")


def test_reading_back_applies_the_official_rules():
    rng = np.random.default_rng(1)
    bench, _ = _ilias_like(rng, n_instances=6, n_distractors=60)
    rankings = _tied_rankings(rng, bench, length=40, levels=6)
    knn = official_knn(rankings, bench, top_k=100, image_id=_official)
    read, restricted, record = read_official_knn(knn, bench, image_id=_official)
    (direct,) = evaluate(rankings, bench)
    (back,) = evaluate(read, restricted)
    assert back.values == pytest.approx(direct.values, abs=1e-12)

    dropped = bench.queries[0].extra["official_id"]
    del knn[dropped]  # a query absent from the file is left out, not refused
    first = next(iter(knn))
    knn[first] = {"somewhere.tar/unknown": 2.0, **knn[first]}  # an id outside the database
    knn["not/a/query.jpg"] = {}
    read, restricted, record = read_official_knn(knn, bench, image_id=_official)
    assert len(restricted.queries) == len(bench.queries) - 1
    assert record["queries_missing_from_file"]["count"] == 1
    assert record["unknown_database_ids_non_relevant"]["ids"] == ["somewhere.tar/unknown"]
    assert record["unknown_query_keys_ignored"]["count"] == 1
    (scores,) = evaluate(read, restricted, per_query=True)
    assert scores.settings["n_queries_scored"] == len(bench.queries) - 1
    with pytest.raises(ValueError, match="unknown query id"):
        read_official_knn(knn, bench, image_id=_official, check_ids=True)
    del knn["not/a/query.jpg"]
    with pytest.raises(ValueError, match="unknown database id 'somewhere.tar/unknown'"):
        read_official_knn(knn, bench, image_id=_official, check_ids=True)
