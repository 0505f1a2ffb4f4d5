"""The docs: the site builds with `mkdocs build --strict` (no broken link, no page left
out of the nav) and reads nothing from the network; the configuration reference has a
line for every key of conf/; the README stays a first screen."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def _reference():
    """docs/hooks/reference.py, the hook that generates the reference pages."""
    spec = importlib.util.spec_from_file_location("docs_reference", DOCS / "hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mkdocs() -> list[str]:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs / mkdocs-material not installed: pip install -e '.[docs]' (make test does)")
    return [sys.executable, "-m", "mkdocs"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([*_mkdocs(), "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def test_the_site_builds_strict_with_every_page(site):
    for page in ["index.html", "tutorials/own-photos.html", "reference/config.html",
                 "reference/cli.html", "reference/api.html", "architecture.html", "extending.html"]:
        assert (site / page).is_file(), page
    # the generated command reference holds every verb's own --help
    cli = (site / "reference" / "cli.html").read_text()
    for flag in ["--index-dir", "--run-dir", "--sizes-only", "--parent"]:
        assert flag in cli, flag
    # the API reference is rendered from the docstrings
    assert "Decompose one image" in (site / "reference" / "api.html").read_text()


def test_every_page_is_in_the_nav():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)

    def pages(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from pages(value)
        elif isinstance(node, list):
            for value in node:
                yield from pages(value)

    in_nav = set(pages(config["nav"]))
    written = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if "hooks" not in p.parts}
    generated = {"reference/config.md", "reference/cli.md"}
    assert written | generated == in_nav, (sorted(written - in_nav), sorted(in_nav - written - generated))


def test_the_site_fetches_nothing_from_the_network(site):
    pattern = re.compile(r'<(?:link|script|img|iframe|source)\b[^>]*\b(?:href|src)="((?:https?:)?//[^"]*)"')
    for page in site.rglob("*.html"):
        found = pattern.findall(page.read_text())
        assert not found, f"{page.relative_to(site)} loads {found[:3]}"
    for sheet in site.rglob("*.css"):
        assert not re.search(r"url\(['\"]?https?://|@import\s+url\(['\"]?https?://", sheet.read_text()), sheet


def test_every_config_key_has_its_meaning():
    reference = _reference()
    keys = reference.qualified_keys(reference.config_keys())
    lines = reference.meanings()
    assert not sorted(keys - set(lines)), f"keys of conf/ without a line in docs/hooks/config_keys.yaml: {sorted(keys - set(lines))}"
    assert not sorted(set(lines) - keys), f"lines in docs/hooks/config_keys.yaml for no key: {sorted(set(lines) - keys)}"
    assert all(isinstance(v, str) and v.strip() and "\n" not in v for v in lines.values())
    page = reference.config_page()
    assert "| `cutter.tau1` | `0.97`" in page and lines["cutter.tau1"] in page


def test_a_new_key_without_its_line_is_caught(tmp_path):
    reference = _reference()
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    with open(conf / "cutter" / "_base.yaml", "a") as f:
        f.write("new_knob: 3\n")
    with open(conf / "config.yaml", "a") as f:
        f.write("\nextra_top: true\n")
    missing = reference.qualified_keys(reference.config_keys(conf)) - set(reference.meanings())
    assert missing == {"cutter.new_knob", "extra_top"}


def test_readme_is_a_first_screen():
    text = README.read_text()
    assert len(text.splitlines()) <= 300, len(text.splitlines())
    assert len(text.encode()) <= 20 * 1024, len(text.encode())
    # the two set-up commands, exactly as make runs them
    assert 'make run ARGS="backbone.pretrained=false descriptor.pretrained=false"' in text
    assert re.search(r"^make test\b", text, flags=re.M)
    assert "ZL202410173702.3" in text and "MIT" in text
    # every relative link and picture points at a file of the repository
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (ROOT / target).exists(), target


def test_user_texts_name_no_issue_or_work_history():
    texts = [README, *DOCS.rglob("*.md"), *ROOT.glob("experiments/*/README.md")]
    for path in texts:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not re.search(r"\bissue \d|\bitem \d+\b.*issue|this session|previous session", line, re.I), \
                f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
            assert "outputs/<date>/<time>" not in line, f"{path.relative_to(ROOT)}:{number}: runs are in outputs/runs/<date>/<H-M-S-micro>"
