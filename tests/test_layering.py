"""The package's layering, read from the source (AST, function-level imports included).

Folders are capabilities; these rules keep them apart so the arrangement does not decay.  Each
rule names what it guards; a failure lists every offending import with its module and line.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "jobwrap"

# Each third-party library (and sqlite3) has one owner: a module, or a package and all below it.
OWNERS = {
    "click": {"jobwrap.cli"},  # the package: every jobwrap.cli.* module
    "requests": {"jobwrap.net.http"},
    "urllib3": {"jobwrap.net.http"},
    "psutil": {"jobwrap.process.tree"},
    "croniter": {"jobwrap.schedule"},
    "sqlite3": {"jobwrap.store"},  # the store and nothing else
    "redis": {"jobwrap.store.fleet"},
    "prometheus_client": {"jobwrap.run.metrics"},
}

# What a folder's modules may not import (prefixes of jobwrap module names).
FORBIDDEN = {
    "jobwrap.process": ("jobwrap.config", "jobwrap.run", "jobwrap.store", "jobwrap.net",
                        "jobwrap.idlemon", "jobwrap.promonitor", "jobwrap.cron",
                        "jobwrap.status", "jobwrap.doctor", "jobwrap.views"),
    "jobwrap.output": ("jobwrap.config", "jobwrap.run", "jobwrap.store", "jobwrap.net",
                       "jobwrap.idlemon", "jobwrap.promonitor", "jobwrap.cron",
                       "jobwrap.process", "jobwrap.status", "jobwrap.doctor", "jobwrap.views"),
    "jobwrap.net": ("jobwrap.store", "jobwrap.run", "jobwrap.cron", "jobwrap.idlemon",
                    "jobwrap.promonitor", "jobwrap.config"),
    "jobwrap.idlemon.client": ("jobwrap.store", "jobwrap.run", "jobwrap.cron"),
    "jobwrap.promonitor.client": ("jobwrap.store", "jobwrap.run", "jobwrap.cron"),
    "jobwrap.idlemon": ("jobwrap.promonitor",),
    "jobwrap.promonitor": ("jobwrap.idlemon",),
}

# store/ knows only errors (and itself).
STORE_MAY_IMPORT = ("jobwrap.errors", "jobwrap.store")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module (absolute)
    line: int

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports_of(path: Path) -> list[Import]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(name, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append(Import(name, base, node.lineno))
            # `from jobwrap.x import y` may import the submodule jobwrap.x.y.
            found += [Import(name, f"{base}.{alias.name}", node.lineno) for alias in node.names
                      if MODULES.get(f"{base}.{alias.name}")]
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
IMPORTS = [imp for p in MODULES.values() for imp in _imports_of(p)]
INTERNAL = [imp for imp in IMPORTS if imp.target.split(".")[0] == "jobwrap"]


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _report(offences: list[Import]) -> str:
    return "\n".join(map(str, offences))


def test_the_rules_see_the_whole_package():
    assert len(MODULES) > 30
    assert any(imp.module == "jobwrap.cli.main" and imp.target == "click" for imp in IMPORTS)
    # function-level imports are seen too: cli imports the run core inside a command
    assert any(imp.module == "jobwrap.cli.run" and _under(imp.target, "jobwrap.run")
               for imp in IMPORTS)


def test_no_import_cycle():
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for imp in INTERNAL:
        target = imp.target
        while target not in MODULES and "." in target:
            target = target.rpartition(".")[0]
        if target in MODULES and target != imp.module and target != "jobwrap":
            graph[imp.module].add(target)
    cycles = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_nothing_imports_the_cli():
    offences = [imp for imp in INTERNAL if _under(imp.target, "jobwrap.cli")
                and not _under(imp.module, "jobwrap.cli") and imp.module != "jobwrap.__main__"]
    assert not offences, _report(offences)


def test_sys_exit_only_in_the_cli():
    offences = []
    for name, path in MODULES.items():
        if name in ("jobwrap.cli.main", "jobwrap.__main__"):  # only main() exits
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr == "exit"
                    and isinstance(node.value, ast.Name) and node.value.id == "sys"):
                offences.append(f"{name}:{node.lineno} calls sys.exit")
    assert not offences, "\n".join(offences)


@pytest.mark.parametrize("library", sorted(OWNERS))
def test_each_library_has_one_owner(library):
    offences = [imp for imp in IMPORTS if _under(imp.target, library)
                and not any(_under(imp.module, owner) for owner in OWNERS[library])]
    assert not offences, _report(offences)


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_folders_keep_to_their_layer(folder):
    offences = [imp for imp in INTERNAL if _under(imp.module, folder)
                and any(_under(imp.target, bad) for bad in FORBIDDEN[folder])]
    assert not offences, _report(offences)


def test_the_store_knows_only_errors():
    offences = [imp for imp in INTERNAL if _under(imp.module, "jobwrap.store")
                and not any(_under(imp.target, ok) for ok in STORE_MAY_IMPORT)]
    assert not offences, _report(offences)


def test_subpackage_inits_are_empty():
    # Nothing is imported eagerly: `jobwrap run -- true` pays only for what it uses.
    inits = [p for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE]
    assert inits
    assert not [str(p) for p in inits if p.read_text().strip()]


def test_no_module_is_over_400_lines():
    long = {name: n for name, p in MODULES.items()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, long
