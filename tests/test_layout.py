"""The tree shows the data flow: metrics never depend on networks, modules stay
small, and the package map (docs/architecture.md) matches the files."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "claid"
MAX_LINES = 420  # "no file over ~400 lines"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


#: What builds or runs networks (and the detector): metrics and dataset loaders reach none of it.
NETWORKS = ("claid.backbones", "claid.engine", "claid.descriptors", "claid.models", "claid.cutters")
MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """Every claid module a file imports, at module level or inside a function, and
    the packages holding them."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    # importing a.b.c runs the packages a.b and a.b.c too; the root package `claid`
    # is left out of that rule (its __init__ holds only lazy accessors), but a direct
    # `import claid` / `from claid import x` is an edge like any other
    for module in list(found):
        parts = module.split(".")
        found.update(".".join(parts[:i]) for i in range(2, len(parts)))
    return {m for m in found if m in MODULES and m != name}


def _reachable(start: str) -> dict[str, str]:
    """Modules reachable from ``start`` -> the module that imports it (for the path)."""
    seen, todo = {start: ""}, [start]
    while todo:
        current = todo.pop()
        for target in _imports(MODULES[current]):
            if target not in seen:
                seen[target] = current
                todo.append(target)
    return seen


def _chain(seen: dict[str, str], end: str) -> str:
    chain = [end]
    while seen[chain[-1]]:
        chain.append(seen[chain[-1]])
    return " <- ".join(chain)


@pytest.mark.parametrize("package", ["claid.evaluation", "claid.datasets"])
def test_metrics_and_datasets_never_reach_networks(package):
    for name in sorted(m for m in MODULES if m == package or m.startswith(package + ".")):
        seen = _reachable(name)
        bad = [m for m in seen if m.startswith(NETWORKS)]
        assert not bad, f"{name} reaches {bad[0]}: {_chain(seen, bad[0])}"


def test_the_import_walker_sees_function_level_imports():
    # the pipeline imports its stages inside run(): the walker must follow them
    seen = _reachable("claid.pipeline")
    assert "claid.engine.extraction_stage" in seen and "claid.backbones.base" in seen
    # `import claid` (e.g. for its version) leads through the lazy accessors to networks
    assert any(m.startswith(NETWORKS) for m in _reachable("claid"))


def test_no_module_is_over_about_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules: {long}"


def test_readme_map_matches_the_package():
    """The package map of the docs' architecture page names every module and package of
    claid/, and nothing that does not exist."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    block = page.split("## Where things live", 1)[1].split("```", 2)[1]
    named = set(re.findall(r"^\s{2,4}([\w/]+(?:\.py)?/?)\s", block, flags=re.M))
    top = {p.name + ("/" if p.is_dir() else "") for p in PACKAGE.iterdir()
           if p.name != "__pycache__" and p.name != "__init__.py" and not p.name.startswith("_")}
    assert top <= named, f"not in the package map of docs/architecture.md: {sorted(top - named)}"
    for entry in named:
        assert (PACKAGE / entry.rstrip("/")).exists(), f"docs/architecture.md names claid/{entry}, which does not exist"
