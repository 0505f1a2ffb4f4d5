"""claid serve --queries FILE: the query-set editor's API (append, list, edit, delete, the
read-only refusal, ids through the index's table, boxes checked, concurrent appends, lines
someone else wrote badly, uploads of outside photos)."""

import io
import json
import shutil
import threading

import pytest
from PIL import Image

pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from claid.serve import create_app  # noqa: E402


@pytest.fixture
def collection(served_run, tmp_path):
    """(a copy of the served collection, its queries.jsonl path) (the copy takes the writes)."""
    root = tmp_path / "photos"
    shutil.copytree(served_run[1]["image_root"], root)
    return root, root / "queries.jsonl"


def _client(served_run, root, queries, **kwargs):
    settings = served_run[1]
    app = create_app(settings["index"], store_dir=settings["store"], image_root=root, queries_file=queries,
                     **kwargs)
    return TestClient(app, raise_server_exceptions=False), app


def _error(answer, status):
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error"} and "\n" not in answer.json()["error"]
    return answer.json()["error"]


def _png(size=(64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(out, format="PNG")
    return out.getvalue()


def test_without_queries_every_route_is_a_403(served_run, collection):
    client, _ = _client(served_run, collection[0], None)
    for answer in (client.get("/api/queries"), client.post("/api/queries", json={"image_id": 0}),
                   client.put("/api/queries/x", json={"image_id": 0}), client.delete("/api/queries/x"),
                   client.post("/api/queries/upload", files={"image": ("q.png", _png(), "image/png")})):
        assert "read-only" in _error(answer, 403)
    assert not collection[1].exists() and not (collection[0] / "queries").exists()
    assert client.get("/api/health").json()["queries_file"] is None


def test_append_list_edit_delete(served_run, collection):
    root, queries = collection
    client, _ = _client(served_run, root, queries)
    saved = client.post("/api/queries", json={"image_id": "a/cat.png", "box": [10, 5, 100, 90],
                                              "positives": ["a/coffee.png", 2], "junk": []}).json()
    assert saved["qid"] == "q0000"
    third = client.get("/api/images?offset=2&limit=1").json()["images"][0]["id"]  # index 2, by its id
    line = json.loads(queries.read_text().splitlines()[0])
    assert line == {"image": "a/cat.png", "box": [10.0, 5.0, 100.0, 90.0],
                    "positives": ["a/coffee.png", third], "junk": [], "qid": "q0000"}
    assert '"box": [10, 5, 100, 90]' in queries.read_text()  # whole pixels written as integers
    client.post("/api/queries", json={"image_id": 3, "positives": ["a/cat.png"], "qid": "astro"})
    listing = client.get("/api/queries").json()
    assert [q["qid"] for q in listing["queries"]] == ["q0000", "astro"] and listing["problems"] == []
    assert listing["command"] == (f"python run.py dataset=manifest dataset.root={root} "
                                  "dataset.queries_file=queries.jsonl")
    assert "leaves the database" in listing["note"]
    before = queries.read_bytes()
    edited = client.put("/api/queries/q0000", json={"image_id": "a/cat.png", "positives": ["b/astronaut.png"]})
    assert edited.json()["entry"]["qid"] == "q0000"
    assert edited.status_code == 200, edited.text
    assert (root / "queries.jsonl.bak").read_bytes() == before
    lines = [json.loads(x) for x in queries.read_text().splitlines()]
    assert lines[0]["positives"] == ["b/astronaut.png"] and lines[0]["box"] is None and lines[1]["qid"] == "astro"
    assert client.delete("/api/queries/q0000").status_code == 200
    assert [json.loads(x)["qid"] for x in queries.read_text().splitlines()] == ["astro"]
    _error(client.delete("/api/queries/q0000"), 404)
    _error(client.post("/api/queries", json={"image_id": 0, "qid": "astro"}), 409)


@pytest.mark.parametrize("body, status, words", [
    ({"image_id": "a/cat.png", "box": [0, 0, 129, 96]}, 400, "outside"),
    ({"image_id": "a/cat.png", "box": [50, 5, 10, 90]}, 400, "empty"),
    ({"image_id": "a/cat.png", "box": [0, 0, "9" * 400, 5]}, 400, "box must be"),
    ({"image_id": "a/dog.png"}, 404, "unknown image"),
    ({"image_id": "../../etc/passwd"}, 404, "unknown image"),
    ({"image_id": "\u00b2"}, 404, "unknown image"),
    ({"image_id": 0, "positives": ["/etc/passwd"]}, 404, "unknown image"),
    ({"image_id": 0, "positives": [0]}, 400, "its own positive"),
    ({"image_id": 0, "positives": [1], "junk": [1]}, 400, "both positive and junk"),
    ({"image_id": 0, "positives": "a/coffee.png"}, 400, "must be a list"),
    ({"image_id": 0, "qid": "two\nlines"}, 400, "qid must be"),
    ({"image_id": 0, "upload": "queries/x.png"}, 400, "exactly one"),
    ({"upload": "../a/cat.png"}, 400, "upload must be"),
    ({"image_id": 0, "evil": 1}, 400, "unknown key"),
    ([1, 2], 400, "JSON object"),
])
def test_a_bad_query_is_refused_in_one_line_and_nothing_is_written(served_run, collection, body, status, words):
    client, _ = _client(served_run, *collection)
    assert words in _error(client.post("/api/queries", json=body), status)
    assert not collection[1].exists()


def test_concurrent_appends_lose_nothing(served_run, collection):
    from claid.serve.query_editor import QuerySet

    root, queries = collection
    _, app = _client(served_run, root, queries)
    engine = app.state.engine
    editors = [QuerySet(queries, root, engine) for _ in range(2)]  # two servers on one file

    def add(i):
        editor = editors[i % 2]
        editor.append(editor.entry({"image_id": i % 4, "positives": [(i + 1) % 4], "qid": f"t{i:03d}"}))

    threads = [threading.Thread(target=add, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = [json.loads(x) for x in queries.read_text().splitlines()]
    assert sorted(q["qid"] for q in lines) == [f"t{i:03d}" for i in range(40)]


def test_lines_someone_else_wrote_badly_are_reported_by_line(served_run, collection):
    root, queries = collection
    good = json.dumps({"image": "a/cat.png", "positives": ["b/rocket.png"], "qid": "ok"})
    queries.write_bytes("\n".join([good, "not json", '{"image": 3}', "[1]", '{"image": "a/cat.png", "bx": 1}',
                                   '{"image": "a/cat.png", "box": [0, 0, NaN, 4]}']).encode() + b"\n\xff\xfe\n")
    client, _ = _client(served_run, root, queries)
    listing = client.get("/api/queries").json()
    assert [q["qid"] for q in listing["queries"]] == ["ok"]
    assert [p["line"] for p in listing["problems"]] == [2, 3, 4, 5, 6, 7]
    assert listing["problems"][0]["error"].startswith("queries.jsonl:2: ")
    client.post("/api/queries", json={"image_id": 1, "positives": [2]})
    assert client.delete("/api/queries/ok").status_code == 200  # the bad lines stay as they were
    assert queries.read_bytes().count(b"not json") == 1 and b"\xff\xfe" in queries.read_bytes()


def test_an_outside_photo_is_uploaded_by_hash_and_used_as_a_query(served_run, collection):
    root, queries = collection
    client, _ = _client(served_run, root, queries, max_upload_bytes=50_000, max_upload_pixels=100_000)
    photo = _png()
    answer = client.post("/api/queries/upload", files={"image": ("mine.png", photo, "image/png")}).json()
    name = answer["upload"]
    assert name.startswith("queries/") and name.endswith(".png") and answer["image"] == name
    assert (root / name).read_bytes() == photo
    assert client.get(f"/api/queries/image?name={name}").content == photo
    _error(client.get("/api/queries/image?name=../a/cat.png"), 400)
    again = client.post("/api/queries/upload", files={"image": ("other.png", photo, "image/png")}).json()
    assert again["upload"] == name and len(list((root / "queries").glob("*.png"))) == 1
    client.post("/api/queries", json={"upload": name, "box": [1, 2, 30, 40], "positives": ["a/cat.png"]})
    line = json.loads(queries.read_text())
    assert line["image"] == name and line["box"] == [1.0, 2.0, 30.0, 40.0]
    from claid.datasets.manifest import load_manifest

    bench = load_manifest(root, queries_file="queries.jsonl")  # what run.py dataset=manifest reads
    assert [(q.image, q.box, q.positives) for q in bench.queries] == [(name, (1.0, 2.0, 30.0, 40.0),
                                                                       ["a/cat.png"])]
    assert name not in bench.database and "a/cat.png" in bench.database
    _error(client.post("/api/queries", json={"upload": name, "box": [0, 0, 65, 48]}), 400)
    big = Image.effect_noise((200, 200), 60).convert("RGB")
    out = io.BytesIO()
    big.save(out, format="PNG")
    assert "over this server's limit" in _error(
        client.post("/api/queries/upload", files={"image": ("big.png", out.getvalue(), "image/png")}), 413)
    _error(client.post("/api/queries/upload", files={"image": ("x.png", b"not an image", "image/png")}), 400)
    assert len(list((root / "queries").glob("*.png"))) == 1


@pytest.mark.slow
def test_a_query_set_drawn_here_evaluates_and_opens_in_the_run_explorer(served_run, collection, tmp_path):
    """The command the page offers (dataset=manifest with the file) runs, and its run dir opens
    in the run explorer with the query's own image (it left the database) served."""
    from hydra import compose, initialize_config_dir

    from claid.pipeline import run
    from tests.serve.conftest import CONF

    root, queries = collection
    client, _ = _client(served_run, root, queries)
    client.post("/api/queries", json={"image_id": "a/cat.png", "box": [10, 5, 100, 90],
                                      "positives": ["a/coffee.png"], "qid": "cat"})
    command = client.get("/api/queries").json()["command"].split()
    assert command[:3] == ["python", "run.py", "dataset=manifest"]
    overrides = [f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/out", "tracking=none",
                 "backbone=dino_vits8", "backbone.pretrained=false", "descriptor.pretrained=false",
                 "engine.batch_size=4", *command[2:]]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    run_dir = run(cfg, run_dir=tmp_path / "run").run_dir
    explorer = TestClient(create_app(served_run[1]["index"], store_dir=served_run[1]["store"], image_root=root,
                                     run_dirs=[run_dir]))
    (row,) = explorer.get("/api/run/queries").json()["queries"]
    assert row["qid"] == "cat" and row["image"] == "a/cat.png" and row["box"] == [10.0, 5.0, 100.0, 90.0]
    assert explorer.get("/api/run/query-image?qid=cat").content == (root / "a/cat.png").read_bytes()
    ranked = explorer.get("/api/run/queries/cat").json()["results"]
    assert "a/cat.png" not in [r["image"] for r in ranked]  # the query image left the database
