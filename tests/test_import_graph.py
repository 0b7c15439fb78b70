"""The package's imports form a one-way graph, and typer and rich stay where they belong.

Every import counts: at the top of a module, inside a function (kept there only to spare start-up
torch, rich or submitit) and under TYPE_CHECKING. Read with ast: nothing is imported here.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC_DIR = ROOT / "src"
sys.path.insert(0, str(ROOT / "scripts"))
# the walker and the floors live in the script that draws the graph, so the picture and the test
# read the code the same way
from package_graph import (  # noqa: E402
    FLOORS,
    MODULES,
    PACKAGE,
    floor_of,
    import_graph,
    imported_names,
    own_module,
    package_of,
    upward,
)


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def describe(component: list[str], graph: dict[str, dict[str, int]]) -> str:
    members = set(component)
    edges = [
        f"{a} → {b} (line {line})"
        for a in component
        for b, line in sorted(graph[a].items())
        if b in members
    ]
    return "; ".join(edges)


class TestTheWalkerItself:
    def test_it_sees_the_whole_package(self) -> None:
        assert {"autograd_check", "autograd_check.cli.app", "autograd_check.slurm.watch",
                "autograd_check.base.spec"} <= set(MODULES)

    def test_it_sees_imports_inside_functions_and_under_type_checking(self) -> None:
        graph = import_graph()
        # cli/run.py imports execute only inside the command (it loads torch)
        assert "autograd_check.execute" in graph["autograd_check.cli.run"]
        # render/progress.py names JobInfo under TYPE_CHECKING only
        assert "autograd_check.slurm.commands" in graph["autograd_check.render.progress"]

    def test_it_finds_a_cycle(self) -> None:
        graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
        assert cycles(graph) == [["a", "b", "c"]]
        assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_every_package_is_on_a_floor() -> None:
    packages = {package_of(m) for m in MODULES}
    placed = {p for _, ps, _ in FLOORS for p in ps}
    assert packages <= placed, f"packages on no floor: {sorted(packages - placed)}"
    assert len(placed) == sum(len(ps) for _, ps, _ in FLOORS), "a package on two floors"


def test_the_floor_check_sees_an_upward_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is not vacuous: a made-up import of the CLI by the kernel is caught."""
    graph = import_graph()
    graph["autograd_check.kernel.compare"]["autograd_check.cli.app"] = 7
    monkeypatch.setattr("package_graph.import_graph", lambda: graph)
    assert upward() == ["autograd_check.kernel.compare:7 -> autograd_check.cli.app"]
    assert floor_of("cli") > floor_of("kernel")


def test_every_import_runs_downward() -> None:
    """A package uses only packages on floors below its own (lazy and TYPE_CHECKING imports
    included): the order is FLOORS in scripts/package_graph.py, drawn in docs/development.md."""
    assert upward() == []


def test_no_import_cycle() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert found == [], "import cycles: " + " | ".join(describe(c, graph) for c in found)


def lines_importing(top: str) -> list[str]:
    """'module:line' for every import of the top-level package `top` in the package."""
    hits = []
    for name, path in MODULES.items():
        for dotted, line in imported_names(name, path):
            if dotted == top or dotted.startswith(top + "."):
                hits.append(f"{name}:{line}")
    return sorted(set(hits))


@pytest.mark.parametrize(
    ("library", "allowed"),
    [
        ("typer", ("autograd_check.cli",)),
        ("rich", ("autograd_check.cli", "autograd_check.render")),
    ],
)
def test_libraries_stay_in_their_layer(library: str, allowed: tuple[str, ...]) -> None:
    """typer belongs to the command line; rich to it and the views (render/)."""
    outside = [
        hit for hit in lines_importing(library)
        if not any(hit == a or hit.startswith((a + ".", a + ":")) for a in allowed)
    ]
    assert outside == []
    assert lines_importing(library), f"the walker found no import of {library} at all"


HEAVY = ("torch", "rich", "submitit", "typer", "matplotlib")
"""What an import inside a function may spare start-up: these libraries take 50 ms to seconds."""


def top_level_imports(name: str, path: Path) -> set[str]:
    """The dotted names a module imports at its top (not in functions, not under TYPE_CHECKING)."""
    out: set[str] = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            if isinstance(node, ast.Import):
                out.update(alias.name for alias in node.names)
            elif node.level:
                out.add(".".join(package[: len(package) - node.level + 1]
                                 + ([node.module] if node.module else [])))
            else:
                out.add(node.module or "")
    return out


def loads_heavy(dotted: str, seen: set[str] | None = None) -> bool:
    """Whether importing `dotted` imports one of HEAVY (at once, or through the package)."""
    if dotted.split(".")[0] in HEAVY:
        return True
    module = own_module(dotted)
    seen = set() if seen is None else seen
    if module is None or module in seen:
        return False
    seen.add(module)
    return any(loads_heavy(x, seen) for x in top_level_imports(module, MODULES[module]))


def says_why(line: str) -> bool:
    """A comment on the line that is more than a linter's or type checker's pragma."""
    comment = line.partition("#")[2].strip()
    return bool(comment) and not comment.startswith(("noqa", "type:"))


def test_an_import_inside_a_function_spares_start_up_a_library_and_says_so() -> None:
    """An import in a function is there only to keep torch, rich, submitit (...) out of start-up,
    or, in the package's __init__.py, to export the API lazily; with a comment saying so on the
    line, or above the block of imports it starts."""
    found = []
    for name, path in MODULES.items():
        lines = path.read_text().splitlines()
        tree = ast.parse(path.read_text(), str(path))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                targets = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                    node.module or "" if not node.level else name]
                if isinstance(node, ast.ImportFrom) and not node.level:
                    targets += [f"{node.module}.{a.name}" for a in node.names]
                # The package's own lazy exports (the API) keep the engine's modules out of
                # `import autograd_check` too, whatever those import.
                if name != PACKAGE and not any(loads_heavy(t) for t in targets):
                    found.append(f"{path.name}:{node.lineno} imports nothing heavy: move it up")
                    continue
                i = node.lineno - 1
                while i > 0 and lines[i - 1].lstrip().startswith(("from ", "import ", ")")) \
                        or (i > 0 and lines[i - 1].startswith(" " * 8) and lines[i - 1].strip()
                            and lines[i - 1].strip().endswith(",")):
                    i -= 1
                above = lines[i - 1].lstrip()
                if not says_why(lines[node.lineno - 1]) and not above.startswith("#"):
                    found.append(f"{path.name}:{node.lineno} does not say why it is lazy")
    assert not found, "\n".join(found)


def private_imports() -> list[str]:
    """'module:line name' for each `from autograd_check.X import _name` (a module's private
    helper used by another: make it public where it is owned, or keep it where it is used)."""
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(
                    PACKAGE)):
                found += [f"{name}:{node.lineno} {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_module_imports_another_modules_private_name() -> None:
    assert private_imports() == []


def test_few_modules_at_the_top_and_thin_commands() -> None:
    """At most six modules side by side at the top of the package (the rest live on their
    floors), and every command module parses, calls one function and renders: 250 lines at most."""
    top = sorted(p.name for p in (SRC_DIR / PACKAGE).glob("*.py"))
    assert len(top) <= 6, top
    long = {p.name: n for p in (SRC_DIR / PACKAGE / "cli").glob("*.py")
            if (n := len(p.read_text().splitlines())) > 250}
    assert long == {}
