"""The `claid` command: `claid --help` lists every verb with its line, each verb's
`--help` explains it, and `python -m claid` runs the same code."""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from claid import cli

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, timeout=120)


def _installed_claid() -> Path | None:
    """The console script pip wrote for this interpreter's environment, if any."""
    script = Path(sys.executable).with_name("claid")
    return script if script.exists() else None


def test_pyproject_declares_the_console_script():
    table = (ROOT / "pyproject.toml").read_text().split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    module, func = re.search(r'^claid = "([\w.]+):(\w+)"', table, flags=re.M).groups()
    assert getattr(importlib.import_module(module), func) is cli.main


def test_help_lists_every_verb_with_its_line(capsys):
    cli.main(["--help"])
    out = capsys.readouterr().out
    for verb, (module, line) in cli.COMMANDS.items():
        assert f"  {verb} " in out and line in out, verb
        assert callable(importlib.import_module(module).main), module
    assert set(cli.COMMANDS) == {"search", "serve", "runs", "verify", "export-coco", "fit-whitening"}


@pytest.mark.parametrize("verb", sorted(cli.COMMANDS))
def test_each_verb_explains_itself(verb, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([verb, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and f"claid {verb}" in out
    assert "options:" in out


def test_no_verb_and_unknown_verb(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([])
    assert stop.value.code == 2 and "commands:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        cli.main(["serch"])
    assert str(stop.value.code).startswith("error: unknown command 'serch'")


def test_python_dash_m_claid_is_the_same_command():
    listed = _run(sys.executable, "-m", "claid", "--help")
    assert listed.returncode == 0 and listed.stdout.strip() == cli.usage()
    verify = _run(sys.executable, "-m", "claid", "verify", "--help")
    assert verify.returncode == 0 and "--sizes-only" in verify.stdout
    unknown = _run(sys.executable, "-m", "claid", "nope")
    assert unknown.returncode == 1 and unknown.stderr.strip().startswith("error: unknown command 'nope'")


def test_installed_console_script():
    script = _installed_claid()
    if script is None:
        pytest.skip("no `claid` script beside this interpreter: `pip install -e .` writes it (make test does)")
    listed = _run(str(script), "--help")
    assert listed.returncode == 0
    for verb in cli.COMMANDS:
        assert f"  {verb} " in listed.stdout
    search = _run(str(script), "search", "--help")
    assert search.returncode == 0 and "--index-dir" in search.stdout
