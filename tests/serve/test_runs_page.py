"""The run explorer in headless Chromium (Playwright, system chromium): with a run dir,
open the worst query; with two run dirs, click a point of the scatter and see both rankings.

Skipped without Chromium unless CLAID_REQUIRE_BROWSER=1 (set by .ci/run). Screenshots go to
$CLAID_SERVE_SCREENS (default: the test's tmp dir).
"""

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.serve.run_dirs import make_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("runs"))


def _serve(run_dirs):
    import uvicorn

    from claid.serve import create_app
    from claid.serve.cli import run_dir_paths

    paths = run_dir_paths(run_dirs[0])
    app = create_app(paths["index_dir"], store_dir=paths["store_dir"], image_root=paths["image_root"],
                     run_dirs=run_dirs)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):  # bounded: 20 s
        if server.started:
            break
        time.sleep(0.1)
    assert server.started, "the server did not start"
    return server, thread, f"http://127.0.0.1:{port}/"


@pytest.mark.browser
def test_open_the_worst_query_then_click_a_scatter_point(chromium, runs, tmp_path):
    from playwright.sync_api import sync_playwright

    screens = Path(os.environ.get("CLAID_SERVE_SCREENS", tmp_path))
    screens.mkdir(parents=True, exist_ok=True)
    for run_dirs, shot in (([runs[0]], "run_explorer.png"), (list(runs), "run_scatter.png")):
        server, thread, url = _serve(run_dirs)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(url)
                rows = page.locator("#run-explorer tr.run-query-row")
                rows.first.wait_for(timeout=20_000)
                assert "lab/mAP-all" in page.locator("#run-explorer .headline").first.inner_text()
                if len(run_dirs) == 1:
                    rows.first.click()  # the worst query
                    page.locator("#run-detail .run-result").first.wait_for(timeout=20_000)
                    assert rows.first.get_attribute("data-qid") in page.locator("#run-detail h4").inner_text()
                else:
                    point = page.locator("#run-scatter circle.run-point").first
                    point.wait_for(timeout=20_000)
                    point.click()
                    page.locator("#run-detail.side-by-side .run-ranking").nth(1).wait_for(timeout=20_000)
                    titles = page.locator("#run-detail h4").all_inner_texts()
                    assert titles[0].startswith("run A: query") and titles[1].startswith("run B: query")
                marks = page.locator("#run-detail .run-result figcaption:not(.name)").all_inner_texts()
                assert marks and all(m.split()[1] in ("positive", "negative") for m in marks)
                page.screenshot(path=str(screens / shot), full_page=True)
                browser.close()
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    assert (screens / "run_explorer.png").stat().st_size > 10_000
