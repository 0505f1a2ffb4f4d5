"""Every third-party package claid imports is declared in pyproject.toml, so a fresh
clone installs it (tqdm and huggingface_hub once came only as dependencies' dependencies)."""

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
# imported inside `try: ... except ImportError`, with a fallback: not required
OPTIONAL = {"requests"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    return {_norm(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0]) for spec in specs}


def _imported_modules() -> set[str]:
    names = set()
    for path in (REPO / "claid").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"claid", "__future__"} - OPTIONAL


def test_every_imported_package_is_declared():
    declared, distributions = _declared(), packages_distributions()
    undeclared = []
    for module in sorted(_imported_modules()):
        candidates = {_norm(d) for d in distributions.get(module, [module])}
        if not candidates & declared:
            undeclared.append(f"{module} (distribution {sorted(candidates)})")
    assert not undeclared, f"imported by claid but not in pyproject.toml: {undeclared}"
