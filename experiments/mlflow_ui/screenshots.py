"""Screenshots of the MLflow UI as a researcher sees it after a sweep: the runs
table of an experiment and the summary on the newest sweep parent run.

    .venv/bin/python experiments/mlflow_ui/screenshots.py --out /tmp/screens
    .venv/bin/python experiments/mlflow_ui/screenshots.py --uri sqlite:///other.db --experiment fig8_tau2

Starts ``mlflow server`` on 127.0.0.1 (a free port) for the store, drives the
system Chromium (``apt-get install chromium``; Playwright for Python, never
``playwright install``) headless, writes ``runs_table.png`` and ``sweep_summary.png``
(+ ``page_text.json``: the visible text of each page, for tests) and stops the
server. Every wait is bounded; the server is stopped even when a step fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = os.environ.get("CLAID_CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def mlflow_server(uri: str, artifacts: str | None, startup_s: float = 180.0):
    """An MLflow server on 127.0.0.1 for ``uri``; yields its base URL."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", uri,
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    if artifacts:
        command += ["--artifacts-destination", artifacts]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {server.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server did not answer on {base} within {startup_s:.0f} s")
            time.sleep(1.0)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def take_screenshots(uri: str, experiment: str, out: Path, artifacts: str | None = None) -> dict:
    """Write the two screenshots of ``experiment`` into ``out``; returns the visible
    text of each page and the URL the experiment page landed on."""
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"error: no MLflow experiment {experiment!r} at {uri}")
    parents = client.search_runs([exp.experiment_id], "tags.`claid.role` = 'sweep'", max_results=1,
                                 order_by=["attributes.start_time DESC"])
    out.mkdir(parents=True, exist_ok=True)
    seen: dict = {}
    with mlflow_server(uri, artifacts) as base, sync_playwright() as play:
        browser = play.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1700, "height": 950})
            page.set_default_timeout(60_000)
            # what a plain link opens (MLflow 3.17 keeps the GenAI / Model training switch
            # in the browser; a fresh browser starts on GenAI), then the runs table
            page.goto(f"{base}/#/experiments/{exp.experiment_id}")
            page.wait_for_timeout(8000)
            seen["plain_link_landed_on"] = page.url
            page.goto(f"{base}/#/experiments/{exp.experiment_id}?workflowType=machine_learning")
            page.wait_for_selector("text=Run Name", timeout=90_000)
            seen["experiment_url"] = page.url
            _close_assistant(page)
            _expand_parents(page)
            # the README's recipe: hide three wide empty columns, show the key metrics and swept values
            seen["columns_not_offered"] = _toggle_columns(page, ["Dataset", "Source", "Models", *KEY_COLUMNS, *(f"sweep.{k}" for k in _swept(parents))])
            page.wait_for_timeout(2000)
            page.screenshot(path=str(out / "runs_table.png"), full_page=True)
            seen["runs_table"] = page.inner_text("body")
            if parents:
                run_id = parents[0].info.run_id
                page.goto(f"{base}/#/experiments/{exp.experiment_id}/runs/{run_id}/artifacts?workflowType=machine_learning")
                page.wait_for_selector("text=summary", timeout=90_000)
                page.get_by_text("summary", exact=True).first.click()
                page.get_by_text("summary.html", exact=True).first.click()
                page.wait_for_timeout(4000)
                page.screenshot(path=str(out / "sweep_summary.png"), full_page=True)
                seen["sweep_summary"] = page.inner_text("body")
                frames = [f for f in page.frames if f != page.main_frame]
                seen["sweep_summary_html"] = " ".join(f.inner_text("body") for f in frames if f.url)
        finally:
            browser.close()
    (out / "page_text.json").write_text(json.dumps(seen, indent=1))
    return seen


KEY_COLUMNS = ["key/headline", "key/chance", "key/global", "key/regions_per_image"]


def _swept(parents) -> list[str]:
    return [k for k in (parents[0].data.tags.get("claid.swept", "") if parents else "").split(",") if k]


def _close_assistant(page) -> None:
    """Close MLflow 3's assistant side panel (it covers a third of the table)."""
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()


def _expand_parents(page) -> None:
    """Open the sweep parents' rows so that their jobs show (MLflow folds them)."""
    toggles = page.locator("button[data-component-id*='runnamecellrenderer']")
    for i in range(min(toggles.count(), 5)):
        toggles.nth(i).click(timeout=5000)
        page.wait_for_timeout(1000)


def _toggle_columns(page, names: list[str]) -> list[str]:
    """Tick (or untick) ``names`` in the runs table's Columns menu, as a user does;
    returns the names the menu does not offer."""
    missing: list[str] = []
    page.get_by_role("button", name="Columns", exact=True).first.click()
    search = page.get_by_placeholder("Search columns")
    for name in names:
        search.fill(name)
        page.wait_for_timeout(500)
        node = page.locator(".du-bois-light-tree-treenode", has_text=re.compile(f"^{re.escape(name)}$"))
        if node.count() == 0:  # a metric these runs did not log: said in page_text.json
            missing.append(name)
            continue
        node.first.locator(".du-bois-light-tree-checkbox").click()
    page.keyboard.press("Escape")
    return missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uri", default="sqlite:///outputs/mlflow/mlflow.db")
    parser.add_argument("--experiment", default="claid")
    parser.add_argument("--artifacts", default=None, help="the store's artifact folder, when not recorded in it")
    parser.add_argument("--out", type=Path, default=Path("outputs/screens"))
    args = parser.parse_args()
    seen = take_screenshots(args.uri, args.experiment, args.out, args.artifacts)
    print(f"landed on {seen['experiment_url']}; screenshots in {args.out}")


if __name__ == "__main__":
    main()
