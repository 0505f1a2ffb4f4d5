"""The run explorer's API in process (fastapi TestClient): every endpoint and its bad input."""

import json
import shutil

import pytest

pytest.importorskip("httpx")

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from claid.serve.run_records import RunRecordError  # noqa: E402
from claid.serve.runs import runs_router  # noqa: E402
from tests.serve.run_dirs import make_runs  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("runs"))


def _client(*dirs):
    app = FastAPI()
    app.include_router(runs_router(list(dirs)))
    return TestClient(app)


def _one_line_error(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"]
    return body["error"]


def test_run_summary_and_queries_worst_first(runs):
    client = _client(*runs)
    body = client.get("/api/run").json()
    a, b = body["runs"]
    report = json.loads((runs[0] / "metrics.json").read_text())
    assert a["headline_metric"] == "lab/mAP-all" and a["metrics"] == report["metrics"]
    assert "shuffled" in a["baselines"] and a["settings"]["index"] == report["settings"]["index"]
    assert b["settings"]["index"] != a["settings"]["index"]
    rows = client.get("/api/run/queries").json()
    values = [r["values"]["mAP-all"] for r in rows["queries"]]
    assert rows["sort"] == "mAP-all" and values == sorted(values) and len(values) == a["n_queries"]
    best = client.get("/api/run/queries", params={"sort": "mAP-50", "order": "desc"}).json()["queries"]
    assert [r["values"]["mAP-50"] for r in best] == sorted((r["values"]["mAP-50"] for r in best), reverse=True)
    by_qid = client.get("/api/run/queries", params={"sort": "qid", "run": "1"}).json()
    assert by_qid["run"] == 1 and [r["qid"] for r in by_qid["queries"]] == sorted(r["qid"] for r in best)


def test_one_query_has_its_marked_ranking_and_box(runs):
    client = _client(*runs)
    worst = client.get("/api/run/queries").json()["queries"][0]
    body = client.get(f"/api/run/queries/{worst['qid']}").json()
    assert body["qid"] == worst["qid"] and body["values"] == worst["values"] and len(body["box"]) == 4
    assert body["results"] and all(r["marks"]["default"] in ("positive", "negative") for r in body["results"])
    saved = json.loads((runs[0] / "rankings.json").read_text())
    ranked = next(q for q in saved["queries"] if q["qid"] == worst["qid"])
    assert {r["image"] for r in body["results"] if r["marks"]["default"] == "positive"} == \
        {r["image"] for r in ranked["results"] if r["relevant"]}
    other = client.get(f"/api/run/queries/{worst['qid']}", params={"run": "1"}).json()
    assert other["run"] == 1 and other["qid"] == worst["qid"]


def test_compare_pairs_every_query_and_takes_a_metric(runs):
    client = _client(*runs)
    body = client.get("/api/run/compare").json()
    assert body["metric"] == "mAP-all" and body["n_paired"] == len(body["points"]) > 0
    a = {r["qid"]: r["values"]["mAP-all"] for r in client.get("/api/run/queries").json()["queries"]}
    b = {r["qid"]: r["values"]["mAP-all"] for r in client.get("/api/run/queries?run=1").json()["queries"]}
    assert {p["qid"]: (p["a"], p["b"]) for p in body["points"]} == {q: (a[q], b[q]) for q in a}
    assert client.get("/api/run/compare", params={"metric": "mAP-50"}).json()["metric"] == "mAP-50"


def test_bad_input_gets_one_line_4xx(runs, tmp_path):
    client = _client(*runs)
    assert "unknown query id" in _one_line_error(client.get("/api/run/queries/nope"), 404)
    assert "unknown query id" in _one_line_error(client.get("/api/run/queries/..%2F..%2Fetc%2Fpasswd"), 404)
    assert "unknown sort key" in _one_line_error(client.get("/api/run/queries?sort=score"), 400)
    assert "order must be" in _one_line_error(client.get("/api/run/queries?order=up"), 400)
    assert "run must be" in _one_line_error(client.get("/api/run/queries?run=2"), 400)
    assert "unknown metric" in _one_line_error(client.get("/api/run/compare?metric=mAP-7"), 400)
    assert "needs two run dirs" in _one_line_error(_client(runs[0]).get("/api/run/compare"), 400)
    assert "run must be 0 (one run dir given)" in _one_line_error(_client(runs[0]).get("/api/run/queries?run=1"), 400)
    # a run B over other queries: the scatter is refused with one line
    other = tmp_path / "other"
    shutil.copytree(runs[1], other)
    doc = json.loads((other / "queries.json").read_text())
    doc["queries"][0]["qid"] = "someone-else"
    (other / "queries.json").write_text(json.dumps(doc))
    error = _one_line_error(_client(runs[0], other).get("/api/run/compare"), 409)
    assert "query ids differ (1 only in A" in error and "someone-else" in error
    assert client.get("/api/run").status_code == 200  # still serving


def test_a_run_dir_without_records_stops_the_router_at_start(runs, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(runs[0], old)
    (old / "queries.json").unlink()
    with pytest.raises(RunRecordError, match="re-run it with run.py"):
        runs_router([old])
