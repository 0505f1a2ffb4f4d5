"""The page's gaps closed: /docs offline, the run explorer's query images (outside the index)
with their boxes and results with names and boxes, the database grid paged and filtered by name.

The browser test drives the system Chromium with every request off 127.0.0.1 aborted (nothing
from the network); skipped without Chromium unless CLAID_REQUIRE_BROWSER=1 (set by .ci/run).
Screenshots go to $CLAID_SERVE_SCREENS (default: the test's tmp dir).
"""

import io
import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from claid.serve import create_app  # noqa: E402
from claid.serve.cli import run_dir_paths  # noqa: E402
from tests.serve.run_dirs import make_runs  # noqa: E402
from tests.serve.test_runs_page import _serve  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("runs"))


def _app(run_dirs):
    paths = run_dir_paths(run_dirs[0])
    return create_app(paths["index_dir"], store_dir=paths["store_dir"], image_root=paths["image_root"],
                      run_dirs=run_dirs)


@pytest.fixture(scope="module")
def client(runs):
    return TestClient(_app(list(runs)))


def test_docs_and_redoc_load_nothing_from_the_network(client):
    for page, files in (("/docs", ("swagger-ui-bundle.js", "swagger-ui.css")), ("/redoc", ("redoc.standalone.js",))):
        html = client.get(page).text
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", html), html[:500]
        for name in files:
            assert f"docs-files/{name}" in html
            answer = client.get(f"/docs-files/{name}")
            assert answer.status_code == 200 and len(answer.content) > 10_000


def test_the_image_listing_pages_and_filters_by_name(client):
    everything = client.get("/api/images?limit=5000").json()
    ids = [i["id"] for i in everything["images"]]
    assert everything["total"] == everything["all"] == len(ids) > 10
    pages = [client.get(f"/api/images?offset={o}&limit=5").json() for o in range(0, len(ids), 5)]
    assert [i["id"] for p in pages for i in p["images"]] == ids
    wanted = [i for i in ids if "0003" in i]
    filtered = client.get("/api/images?q=0003").json()
    assert [i["id"] for i in filtered["images"]] == wanted and filtered["total"] == len(wanted) >= 1
    assert client.get("/api/images?q=" + quote("SCENE_0003")).json()["total"] == len(wanted)  # case ignored
    assert client.get("/api/images?q=no-such-name").json() == {"total": 0, "all": len(ids), "offset": 0,
                                                              "images": []}


def test_a_query_image_outside_the_index_is_served_and_only_those(client, runs):
    queries = json.loads((runs[0] / "queries.json").read_text())["queries"]
    query = next(q for q in queries if q["image"])
    assert client.get("/api/images/" + quote(query["image"], safe="")).status_code == 404  # not in the index
    answer = client.get(f"/api/run/query-image?qid={quote(query['qid'])}&size=64")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    width, height = map(int, answer.headers["X-Image-Size"].split("x"))
    assert max(Image.open(io.BytesIO(answer.content)).size) == 64 and width * height > 0
    original = client.get(f"/api/run/query-image?qid={quote(query['qid'])}&run=1")
    root = json.loads((runs[0] / "metrics.json").read_text())["settings"]["image_root"]
    assert original.content == (Path(root) / query["image"]).read_bytes()
    for url, status in (("/api/run/query-image?qid=nope", 404),
                        (f"/api/run/query-image?qid={quote(query['qid'])}&run=7", 400),
                        (f"/api/run/query-image?qid={quote(query['qid'])}&size=0", 400),
                        ("/api/run/query-image?qid=" + quote("../../etc/passwd"), 404)):
        refused = client.get(url)
        assert refused.status_code == status and "\n" not in refused.json()["error"]


def test_a_run_record_naming_a_file_outside_the_collection_is_refused(runs, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(runs[0], copy)
    records = json.loads((copy / "queries.json").read_text())
    records["queries"][0]["image"] = "../" * 12 + "etc/hostname"
    (copy / "queries.json").write_text(json.dumps(records))
    client = TestClient(_app([copy]))
    answer = client.get(f"/api/run/query-image?qid={quote(records['queries'][0]['qid'])}")
    assert answer.status_code == 403 and "outside the collection root" in answer.json()["error"]


@pytest.mark.browser
def test_the_page_offline_explorer_boxes_and_a_paged_filtered_grid(chromium, runs, tmp_path):
    from playwright.sync_api import sync_playwright

    screens = Path(os.environ.get("CLAID_SERVE_SCREENS", tmp_path))
    screens.mkdir(parents=True, exist_ok=True)
    server, thread, url = _serve([runs[0]])
    outside = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1100})

            def only_here(route):
                if route.request.url.startswith(url):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", only_here)
            errors = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(url + "docs")
            page.locator(".swagger-ui .opblock").first.wait_for(timeout=30_000)
            assert "/api/search" in page.inner_text(".swagger-ui")
            page.screenshot(path=str(screens / "docs_offline.png"))

            page.goto(url)
            page.wait_for_function("document.querySelectorAll('#db-grid .card').length > 0", timeout=30_000)
            total = page.evaluate("fetch('api/images?limit=1').then(r => r.json()).then(b => b.total)")
            first_page = page.locator("#db-grid .card").count()
            assert first_page == min(total, 60) and f"of {total}" in page.inner_text("#db-page")
            name = page.locator("#db-grid .card .id").first.inner_text()
            assert page.locator("#db-grid .card .id").first.get_attribute("title") == name  # full name on hover
            page.fill("#db-filter", "0003")
            page.wait_for_function("document.querySelector('#db-page').textContent.includes('matching')",
                                   timeout=10_000)
            shown = page.locator("#db-grid .card .id").all_inner_texts()
            assert shown and all("0003" in s for s in shown)

            rows = page.locator("#run-explorer tr.run-query-row")
            rows.first.wait_for(timeout=20_000)
            rows.first.click()
            page.wait_for_function("document.querySelectorAll('#run-detail canvas.boxed[data-boxed=\"1\"]').length >= 3",
                                   timeout=30_000)
            query_caption = page.locator("#run-detail figure.run-query figcaption").inner_text()
            assert query_caption.startswith("queries/") and "box" in query_caption
            names = page.locator("#run-detail .run-result figcaption.name")
            assert names.count() >= 2 and names.first.get_attribute("title") == names.first.inner_text()
            page.locator("#run-detail").scroll_into_view_if_needed()
            page.screenshot(path=str(screens / "run_explorer_boxes.png"), full_page=True)
            assert not errors, errors
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not outside, outside[:5]
