#!/usr/bin/env python3
"""The package graph of autograd_check, drawn from the code's own imports, and its floors.

Every import counts: at the top of a module, inside a function and under TYPE_CHECKING. The
source is read with ast; nothing of the package is imported, so this runs without torch.

    python scripts/package_graph.py           the floors, top down, each package with what it uses
    python scripts/package_graph.py --edges   every import between two packages (module:line)
    python scripts/package_graph.py --check   exit 1 listing each import that climbs a floor

A package may use the packages on floors below its own, and nothing on its floor or above.
tests/test_import_graph.py holds the package to FLOORS, the one place the order is written.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "autograd_check"

FLOORS: list[tuple[str, tuple[str, ...], str]] = [
    # (floor, its packages, what it holds), bottom up
    ("version", ("_version",), "the version string"),
    ("base", ("base",), "errors, numbers, torch import, JSON, safety, spec and result"),
    ("kernel", ("kernel",), "compare, diagnose (why), locate (where), views"),
    ("losses", ("losses",), "the Loss protocol, built-in losses, users' own"),
    ("references", ("references",), "isolation, contract, the one path, projection, FD"),
    ("api", ("api",), "check(), assert_gradients()"),
    ("checks", ("checks", "tour"), "spec-driven checks on the API; the tour"),
    ("ranks", ("distributed",), "DDP/FSDP2: launch, rendezvous, one rank's work, verdict"),
    ("execute", ("execute",), "the one dispatcher: spec -> a check here, or N ranks"),
    ("slurm", ("slurm",), "sbatch jobs (submitit), salloc steps, arrays, watching"),
    ("config", ("config",), "TOML profiles"),
    ("sweep", ("sweep",), "grid, results store, claim, runner, report data"),
    ("render", ("render",), "Rich views and the one stderr console"),
    ("surface", (PACKAGE, "pytest_plugin"), "the lazy public API, the pytest plugin"),
    ("cli", ("cli",), "one thin module per command"),
    ("main", ("__main__",), "python -m autograd_check"),
]


def module_files() -> dict[str, Path]:
    """Module name → file, for every module of the package (a package is its __init__.py)."""
    out: dict[str, Path] = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = module_files()


def imported_names(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """(dotted name, line) of everything `name` imports, anywhere in its file. A `from X import
    y` yields X and X.y (y may be a submodule); relative imports are made absolute."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package[: len(package) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield base, node.lineno
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno


def own_module(dotted: str) -> str | None:
    """The package's module a dotted name lies in (its longest prefix that is one), else None."""
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def import_graph() -> dict[str, dict[str, int]]:
    """module → {module it imports: line}; a module's own packages (its parents) are left out:
    Python runs them first anyway, and they may import what they hold."""
    graph: dict[str, dict[str, int]] = {m: {} for m in MODULES}
    for name, path in MODULES.items():
        for dotted, line in imported_names(name, path):
            target = own_module(dotted)
            if target and target != name and not name.startswith(target + "."):
                graph[name].setdefault(target, line)
    return graph


def package_of(module: str) -> str:
    """'autograd_check.slurm.watch' → 'slurm'; the package's own __init__ → 'autograd_check'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def floor_of(package: str) -> int:
    for i, (_, packages, _) in enumerate(FLOORS):
        if package in packages:
            return i
    raise KeyError(f"package {package!r} is on no floor: add it to FLOORS")


def package_edges() -> dict[tuple[str, str], list[str]]:
    """(package, package it imports) → ['module:line', ...], between two different packages."""
    edges: dict[tuple[str, str], list[str]] = {}
    for module, targets in import_graph().items():
        for target, line in targets.items():
            a, b = package_of(module), package_of(target)
            if a != b:
                edges.setdefault((a, b), []).append(f"{module}:{line} -> {target}")
    return edges


def upward() -> list[str]:
    """Every import of a package on its own floor or a higher one, as 'module:line -> module'."""
    return sorted(
        where
        for (a, b), wheres in package_edges().items()
        if floor_of(b) >= floor_of(a)
        for where in wheres
    )


def draw() -> str:
    """The floors top down, each package with the packages it uses."""
    uses: dict[str, set[str]] = {}
    for a, b in package_edges():
        uses.setdefault(a, set()).add(b)
    lines = []
    for i in reversed(range(len(FLOORS))):
        floor, packages, holds = FLOORS[i]
        lines.append(f"{i:2} {floor:<11}{holds}")
        for p in packages:
            used = sorted(uses.get(p, ()), key=lambda q: (-floor_of(q), q))
            lines.append(f"   {'':<11}{p + ':':<16}{', '.join(used) or '-'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="every import between packages")
    parser.add_argument("--check", action="store_true", help="exit 1 on an upward import")
    args = parser.parse_args(argv)
    if args.check:
        found = upward()
        print("\n".join(found) if found else "every import runs downward")
        return 1 if found else 0
    if args.edges:
        for (a, b), wheres in sorted(package_edges().items()):
            print(f"{a} -> {b}: " + ", ".join(w.split(" -> ")[0] for w in wheres))
        return 0
    print(draw())
    return 0


if __name__ == "__main__":
    sys.exit(main())
