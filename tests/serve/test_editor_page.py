"""The query-set editor in headless Chromium: draw a box on a database image, search, mark two
results as positives, save, and find the line in the queries file.

Skipped without Chromium unless CLAID_REQUIRE_BROWSER=1 (set by .ci/run). Screenshots go to
$CLAID_SERVE_SCREENS (default: the test's tmp dir).
"""

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest


@pytest.fixture
def editing_server(served_run, tmp_path):
    """(URL, the queries file) of a server editing a copy of the served collection's query set."""
    import uvicorn

    from claid.serve import create_app

    settings = served_run[1]
    root = tmp_path / "photos"
    shutil.copytree(settings["image_root"], root)
    queries = root / "queries.jsonl"
    app = create_app(settings["index"], store_dir=settings["store"], image_root=root, queries_file=queries)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    for _ in range(200):  # bounded: 20 s
        if instance.started:
            break
        time.sleep(0.1)
    assert instance.started, "the server did not start"
    yield f"http://127.0.0.1:{port}/", queries
    instance.should_exit = True
    thread.join(timeout=10)


@pytest.mark.browser
def test_draw_a_box_mark_two_positives_save_and_see_the_line(chromium, editing_server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, queries = editing_server
    screens = Path(os.environ.get("CLAID_SERVE_SCREENS", tmp_path))
    screens.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        errors = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(url, timeout=30_000)
        page.locator("#editor").wait_for(state="visible", timeout=30_000)
        assert "dataset=manifest" in page.inner_text("#ed-command")
        page.wait_for_function("document.querySelectorAll('#db-grid .card').length === 4", timeout=30_000)
        page.click("#db-grid .card >> nth=0")
        page.wait_for_function("document.querySelector('#box-text').textContent === 'whole image'")
        frame = page.locator("#query-canvas").bounding_box()  # 128x96 drawn at 480x360
        page.mouse.move(frame["x"] + 60, frame["y"] + 30)
        page.mouse.down()
        page.mouse.move(frame["x"] + 300, frame["y"] + 240, steps=8)
        page.mouse.up()
        assert "leaves the database" in page.inner_text("#ed-current")
        page.click("#search")
        page.wait_for_function("document.querySelectorAll('#result-grid .card .marks').length >= 3", timeout=60_000)
        query_id = page.inner_text("#query-name")
        others = [c for c in page.locator("#result-grid .card").all() if c.locator(".id").inner_text() != query_id]
        chosen = [c.locator(".id").inner_text() for c in others[:2]]
        for card in others[:2]:
            card.locator("button.mark-positives").click()
        assert page.locator("#ed-positives .chip").count() == 2
        page.click("#ed-save")
        page.wait_for_function("document.querySelector('#ed-status').textContent.startsWith('saved query')",
                               timeout=10_000)
        page.wait_for_function("document.querySelectorAll('#ed-saved tr').length === 2")
        page.screenshot(path=str(screens / "query_editor.png"), full_page=True)
        (line,) = [json.loads(x) for x in queries.read_text().splitlines()]
        assert line["image"] == query_id and line["box"] == [16.0, 8.0, 80.0, 64.0]
        assert sorted(line["positives"]) == sorted(chosen) and line["junk"] == [] and line["qid"] == "q0000"

        # edit it: drop one positive, save; the file is rewritten, the previous version kept
        page.click("#ed-saved button.edit")
        page.wait_for_function("document.querySelector('#ed-status').textContent === 'editing q0000'")
        assert page.locator("#ed-positives .chip").count() == 2 and "box [16, 8, 80, 64]" in page.inner_text("#box-text")
        page.locator("#ed-positives .chip button").first.click()
        page.click("#ed-save")
        page.wait_for_function("document.querySelector('#ed-status').textContent.startsWith('saved query q0000')",
                               timeout=10_000)
        assert not errors, errors
        browser.close()
    (line,) = [json.loads(x) for x in queries.read_text().splitlines()]
    assert line["positives"] == chosen[1:]  # the first chip (the first marked) was dropped
    assert line["box"] == [16.0, 8.0, 80.0, 64.0] and line["qid"] == "q0000"
    assert len(json.loads(queries.with_name("queries.jsonl.bak").read_text())["positives"]) == 2
