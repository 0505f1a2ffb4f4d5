"""MkDocs hook: the generated reference pages.

- ``reference/cli.md``: ``claid --help`` and every verb's ``--help``, as the command prints them;
- ``reference/config.md``: every config group, option and key of ``conf/`` with its default
  (composed by Hydra, as ``run.py`` composes it) and its one-line meaning from
  ``docs/hooks/config_keys.yaml``.

The pages are built in memory on every ``mkdocs build``; nothing generated is committed.
``tests/test_docs.py`` imports :func:`config_keys` and :func:`meanings` to check that every
key has its line.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
MEANINGS = Path(__file__).with_name("config_keys.yaml")
# groups whose options are overlays or machine settings, not a set of keys
OVERLAY_GROUPS = ("experiment", "local")
TOP = "(top level)"


def _flatten(node, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict) and node:
        out: dict[str, object] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node} if prefix else {}


def _first_comment(path: Path, limit: int = 160) -> str:
    """The first sentence of a YAML file's leading comment block (what the option is)."""
    words: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("# @package"):
            continue
        if not line.startswith("#"):
            break
        words += line.lstrip("#").split()
    text = " ".join(words)
    end = re.search(r"(?<!Sec)(?<!al)(?<!Eq)(?<!e\.g)(?<!i\.e)\. (?=[A-Z(])", text)
    text = text if end is None else text[: end.start() + 1]
    if len(text) > limit:
        text = text[: text.rfind(" ", 0, limit)] + " …"
    return text.replace("|", "\\|")


def groups(conf: Path = CONF) -> dict[str, list[str]]:
    """Config group -> its options (file names without ``.yaml``), sorted."""
    return {d.name: sorted(p.stem for p in d.glob("*.yaml"))
            for d in sorted(conf.iterdir()) if d.is_dir() and d.name not in OVERLAY_GROUPS}


@functools.lru_cache(maxsize=4)
def config_keys(conf: Path = CONF) -> dict[str, dict[str, dict[str, object]]]:
    """Every key as ``run.py`` composes it: {group: {option: {dotted key: default}}};
    the keys of ``conf/config.yaml`` itself are the group ``(top level)``, option ``config``.
    Interpolations (``${paths.data_dir}/...``) are kept as written."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    out: dict[str, dict[str, dict[str, object]]] = {}
    with initialize_config_dir(config_dir=str(Path(conf).resolve()), version_base=None):
        base = OmegaConf.to_container(compose(config_name="config"), resolve=False)
        listed = groups(Path(conf))
        out[TOP] = {"config": _flatten({k: v for k, v in base.items() if k not in listed})}
        for group, options in listed.items():
            out[group] = {}
            for option in options:
                cfg = compose(config_name="config", overrides=[f"{group}={option}"])
                out[group][option] = _flatten(OmegaConf.to_container(cfg, resolve=False).get(group) or {})
    GlobalHydra.instance().clear()
    return out


def qualified_keys(keys: dict) -> set[str]:
    """``group.key`` for every key of every option (``key`` alone at the top level)."""
    return {key if group == TOP else f"{group}.{key}"
            for group, options in keys.items() for values in options.values() for key in values}


def meanings() -> dict[str, str]:
    """``group.key`` -> its one-line meaning (``docs/hooks/config_keys.yaml``)."""
    return yaml.safe_load(MEANINGS.read_text()) or {}


def _cell(value) -> str:
    text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return "`" + text.replace("|", "\\|") + "`"


def config_page() -> str:
    keys, lines = config_keys(), meanings()
    page = [
        "# Configuration reference",
        "",
        "Generated from `conf/` on every build of these pages: each config group, its options",
        "and every key with its default as `python run.py` composes it, and what the key means.",
        "Select an option with `group=option` (`python run.py cutter=ncut`), set a key with",
        "`group.key=value` (`python run.py cutter.tau2=0.3`). Values that differ between the",
        "options of a group are listed per option.",
        "",
    ]
    for group, options in keys.items():
        title = "Top-level keys (`conf/config.yaml`)" if group == TOP else f"`{group}`"
        page += [f"## {title}", ""]
        if group != TOP:
            page += ["| option | what |", "|---|---|"]
            page += [f"| `{o}` | {_first_comment(CONF / group / f'{o}.yaml')} |" for o in options]
            page += [""]
        page += ["| key | default | meaning |", "|---|---|---|"]
        seen: dict[str, dict[str, object]] = {}
        for option, values in options.items():
            for key, value in values.items():
                seen.setdefault(key, {})[option] = value
        for key, per_option in seen.items():
            name = key if group == TOP else f"{group}.{key}"
            by_value: dict[str, list[str]] = {}
            for option, value in per_option.items():
                by_value.setdefault(_cell(value), []).append(option)
            if len(by_value) == 1 and len(per_option) == len(options):
                default = next(iter(by_value))
            else:
                default = "<br>".join(f"{v} ({', '.join(o)})" for v, o in by_value.items())
            meaning = lines.get(name, "").replace("|", "\\|")
            page.append(f"| `{name}` | {default} | {meaning} |")
        page.append("")
    page += ["## `experiment`", "",
             "Overlays that set several groups at once for one table or figure of the paper",
             "(`python run.py -m experiment=fig8_tau2`); see [Reproduce a paper table]"
             "(../tutorials/paper-tables.md).", "", "| overlay | what |", "|---|---|"]
    page += [f"| `{p.stem}` | {_first_comment(p)} |" for p in sorted((CONF / "experiment").glob("*.yaml"))]
    page += ["", "`conf/local/default.yaml` (git-ignored, optional) holds this machine's own overrides.", ""]
    return "\n".join(page)


def _help(argv: list[str]) -> str:
    from claid import cli

    out = io.StringIO()
    saved, columns = sys.argv, os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal's width: the same page everywhere
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            cli.main(argv)
    finally:
        sys.argv = saved
        if columns is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = columns
    return out.getvalue().rstrip()


def cli_page() -> str:
    from claid import cli

    page = ["# Command reference", "",
            "Generated from the commands themselves on every build of these pages.",
            "`claid <command>` and `python -m claid <command>` are the same.", "",
            "## `claid`", "", "```text", _help(["--help"]), "```", ""]
    for verb, (_, line) in cli.COMMANDS.items():
        page += [f"## `claid {verb}`", "", line[0].upper() + line[1:] + ".", "",
                 "```text", _help([verb, "--help"]), "```", ""]
    page += ["## `python run.py`", "",
             "Indexes and evaluates a collection; its settings are the "
             "[configuration](config.md). `python run.py --help` lists the config groups, "
             "`python run.py --cfg job` prints the composed configuration without running.", ""]
    return "\n".join(page)


def on_files(files, config):
    """Add the generated pages to the site (MkDocs hook)."""
    from mkdocs.structure.files import File

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    files.append(File.generated(config, "reference/config.md", content=config_page()))
    files.append(File.generated(config, "reference/cli.md", content=cli_page()))
    return files
