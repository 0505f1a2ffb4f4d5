"""The claid serve page in headless Chromium: pick a database image, draw a box with the mouse,
search, see results with their boxes, open a result's region hierarchy.

Needs the system Chromium (`apt-get install -y chromium`; .ci/run installs it) and Playwright
for Python (dev extra); skipped without Chromium unless CLAID_REQUIRE_BROWSER=1 (set by .ci/run).
Screenshots go to $CLAID_SERVE_SCREENS (default: the test's tmp dir).
"""

import os
import socket
import threading
import time
from pathlib import Path

import pytest


@pytest.fixture
def server(served_run):
    """The app on 127.0.0.1 (a free port) in a thread, stopped after the test."""
    import uvicorn

    from claid.serve import create_app

    settings = served_run[1]
    app = create_app(settings["index"], store_dir=settings["store"], image_root=settings["image_root"])
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
    yield f"http://127.0.0.1:{port}/"
    instance.should_exit = True
    thread.join(timeout=10)


@pytest.mark.browser
def test_draw_a_box_search_and_open_a_hierarchy(chromium, server, tmp_path):
    from playwright.sync_api import sync_playwright

    screens = Path(os.environ.get("CLAID_SERVE_SCREENS", tmp_path))
    screens.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(server, timeout=30_000)
        page.wait_for_function("document.querySelectorAll('#db-grid .card').length === 4", timeout=30_000)
        assert "4 images" in page.inner_text("#index-info")
        page.click("#db-grid .card >> nth=0")
        page.wait_for_function("document.querySelector('#query-name').textContent === 'a/cat.png'")
        page.wait_for_function("document.querySelector('#query-canvas').width === 480")
        # the 128x96 photo is drawn at 480x360 (3.75 screen px per pixel): drag (60,30) -> (300,240)
        frame = page.locator("#query-canvas").bounding_box()
        page.mouse.move(frame["x"] + 60, frame["y"] + 30)
        page.mouse.down()
        page.mouse.move(frame["x"] + 180, frame["y"] + 120, steps=5)
        page.mouse.move(frame["x"] + 300, frame["y"] + 240, steps=5)
        page.mouse.up()
        assert "box [16, 8, 80, 64]" in page.inner_text("#box-text")
        with page.expect_response("**/api/search") as answer:
            page.click("#search")
        assert answer.value.request.post_data_json["box"] == [16, 8, 80, 64]
        page.wait_for_function("document.querySelectorAll('#result-grid canvas[data-boxed=\"1\"]').length >= 3",
                               timeout=60_000)
        assert "score" in page.inner_text("#result-grid .card >> nth=0")
        page.screenshot(path=str(screens / "search_with_box.png"), full_page=True)

        page.click("#result-grid .card >> nth=0")
        page.wait_for_function("/regions/.test(document.querySelector('#hier-name').textContent)", timeout=30_000)
        assert page.is_visible("#hier-canvas")
        assert "regions" in page.inner_text("#depth-text")
        page.screenshot(path=str(screens / "hierarchy.png"), full_page=True)
        assert not errors, errors
        browser.close()
    assert (screens / "search_with_box.png").stat().st_size > 10_000
