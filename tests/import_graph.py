"""The project's own import graph, read from the source (every import statement, including those inside functions).

Used by the layout tests, and runnable to print what each `dvc.yaml` stage must list as its code deps
(`python -m tests.import_graph`), or to write them into dvc.yaml (`python -m tests.import_graph --write`).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("tasks", "flows")


@cache
def modules() -> dict[str, Path]:
    """Every project module by dotted name (`tasks.core.params`; a package by its own name) -> its file."""
    out = {}
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            parts = list(f.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = f
    return out


def _resolve(name: str) -> str | None:
    """The project module a dotted import name refers to (the longest project prefix), or None if not ours."""
    mods = modules()
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


@cache
def imports(module: str) -> frozenset[str]:
    """Project modules that `module` imports anywhere in its file (top level, functions, `if` blocks)."""
    tree = ast.parse(modules()[module].read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            targets = [f"{node.module}.{a.name}" for a in node.names]  # a submodule, else a name in node.module
        else:
            continue
        for t in targets:
            hit = _resolve(t)
            if hit and hit != module:
                out.add(hit)
    return frozenset(out)


def packages_of(module: str) -> list[str]:
    """The packages Python initialises before `module` (`tasks`, `tasks.core` for `tasks.core.params`)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in modules()]


def closure(module: str) -> set[str]:
    """Every project module whose code runs when `module` is imported and its functions are called: its imports,
    theirs, and the packages each one lives in."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += list(imports(m)) + packages_of(m)
    return seen


def is_docstring_only(module: str) -> bool:
    """True for a file that holds nothing but a docstring (editing it cannot change what the code computes)."""
    body = ast.parse(modules()[module].read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def code_deps(module: str) -> list[str]:
    """Repo-relative files of `module`'s closure that hold code: what its dvc.yaml stage must list as deps."""
    files = modules()
    return sorted(files[m].relative_to(REPO).as_posix() for m in closure(module) if not is_docstring_only(m))


def cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module in the import graph (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in imports(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for m in modules():
        if m not in index:
            visit(m)
    return found


def write_dvc_deps(dvc_yaml: Path = REPO / "dvc.yaml") -> None:
    """Rewrite the project-module deps of every stage in `dvc_yaml` to its import closure (other deps and every
    comment are kept)."""
    import re

    out, stage, in_deps = [], None, False
    for line in dvc_yaml.read_text().splitlines():
        if m := re.match(r"^  (\w+):$", line):
            stage = m.group(1)
        if re.match(r"^    deps:$", line):
            in_deps = True
            out.append(line)
            continue
        if in_deps:
            if re.match(r"^      - ", line):
                if not re.match(r"^      - (tasks|flows)/", line):
                    out.append(line)
                continue
            out += [f"      - {d}" for d in code_deps(f"tasks.{stage}")]
            in_deps = False
        out.append(line)
    dvc_yaml.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    import sys

    from tasks.core.stages import STAGES

    if sys.argv[1:] == ["--write"]:
        write_dvc_deps()
    for stage in STAGES:
        print(f"{stage}:")
        for dep in code_deps(f"tasks.{stage}"):
            print(f"      - {dep}")
