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


# ----------------------------------------------------------------------------- structure
#: The only code that reads the whole config: the pipeline and the config side.
CONFIG_READERS = ("claid.pipeline", "claid.config")
#: The only code that writes a run's report files or fills a report / metrics dict.
REPORT_WRITERS = ("claid.report", "claid.pipeline")
#: File names that may repeat across packages.
SHARED_NAMES = {"__init__.py", "base.py", "cli.py"}


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _in(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_only_the_pipeline_and_the_config_side_take_the_whole_config():
    """A stage takes its own settings: no function elsewhere has a ``cfg`` parameter
    or one annotated ``DictConfig``."""
    found = []
    for name, path in MODULES.items():
        if _in(name, CONFIG_READERS):
            continue
        for func in _functions(path):
            args = func.args.posonlyargs + func.args.args + func.args.kwonlyargs
            for arg in args:
                annotation = ast.unparse(arg.annotation) if arg.annotation else ""
                if arg.arg == "cfg" or "DictConfig" in annotation:
                    found.append(f"{path.relative_to(ROOT)}:{func.lineno} {func.name}({arg.arg})")
    assert not found, "functions taking the whole config outside the pipeline: " + ", ".join(found)


_FILLING_METHODS = {"update", "setdefault", "append", "extend", "pop", "__setitem__", "clear"}


def _fills(func, names: set[str]) -> bool:
    """Whether ``func`` writes into one of its parameters ``names`` (item assignment,
    augmented assignment, or a filling method on it or on an item of it)."""

    def root(node):
        while isinstance(node, ast.Subscript | ast.Attribute):
            node = node.value
        return node.id if isinstance(node, ast.Name) else None

    for node in ast.walk(func):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Subscript) and root(t) in names for t in targets):
            return True
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in _FILLING_METHODS and root(node.func.value) in names):
            return True
    return False


def test_only_the_report_module_writes_the_report():
    """Stages return values; no function outside claid/report/ and the pipeline fills a
    report, metrics or notes dict it was handed, or writes the run's report files."""
    found = []
    for name, path in MODULES.items():
        if _in(name, REPORT_WRITERS):
            continue
        for func in _functions(path):
            params = {a.arg for a in func.args.args + func.args.kwonlyargs} & {"report", "metrics", "notes"}
            if params and _fills(func, params):
                found.append(f"{path.relative_to(ROOT)}:{func.lineno} {func.name} fills {sorted(params)}")
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and "write" in ast.unparse(node.func)
                    and any(isinstance(c, ast.Constant) and c.value in ("metrics.json", "rankings.json", "queries.json")
                            for c in ast.walk(node))):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} writes a run file")
    assert not found, "; ".join(found)


def test_the_report_check_sees_a_stage_that_fills_its_report():
    func = ast.parse("def stage(x, report):\n    report['settings']['k'] = 3\n").body[0]
    assert _fills(func, {"report"})
    func = ast.parse("def stage(x, notes):\n    notes.setdefault('a', {})\n").body[0]
    assert _fills(func, {"notes"})
    func = ast.parse("def figures(report):\n    curve = report['recall']\n    return curve\n").body[0]
    assert not _fills(func, {"report"})


def test_no_two_modules_share_a_file_name():
    names: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        names.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    shared = {n: paths for n, paths in names.items() if len(paths) > 1 and n not in SHARED_NAMES}
    assert not shared, f"modules sharing a name: {shared}"


def _type_checking_nodes(tree) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(inner) for inner in ast.walk(node))
    return skip


def _direct_imports(path: Path) -> set[str]:
    """The claid modules a file names in an import, at any level (TYPE_CHECKING aside):
    ``from a.b import c`` is an edge to a.b.c when that is a module, else to a.b."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    skip, found = _type_checking_nodes(tree), set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_no_import_cycle_between_claid_modules():
    graph = {name: _direct_imports(path) for name, path in MODULES.items()}
    cycles = _cycles(graph)
    assert not cycles, f"import cycles: {cycles}"


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_every_package_says_what_it_holds():
    for init in PACKAGE.rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), f"{init.relative_to(ROOT)} has no docstring"
