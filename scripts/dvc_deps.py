"""Each dvc.yaml stage's code deps: the project modules whose code runs when the stage runs, read from the source.

A stage's closure is every project module it imports (every import statement, including those inside functions and
`if` blocks), theirs in turn, and the packages each one lives in. dvc.yaml lists what covers it: each role
sub-package the closure enters, as one directory (`tasks/training`), and each top-level module as its file
(`tasks/head.py`, `tasks/__init__.py`). So editing any module a stage runs re-runs that stage; editing a module of a
sub-package it uses but does not import re-runs it too (cheap: the feature store is content-addressed and ingest has
its hash cache, so such a re-run recomputes nothing heavy), and nothing else does.

Why directories, not the exact file list: DVC re-parses and rewrites dvc.lock with a round-trip YAML parser after
every stage it runs; with one entry per file (~300) that was the larger part of DVC's own time in a head change
(DVC's CPU 5.9-7.0 s -> 4.1 s on the demo with directories, lock 1,349 -> 533 lines; bench/RESULTS.md section 13a).

    python scripts/dvc_deps.py            # print each stage's code deps
    python scripts/dvc_deps.py --write    # write them into dvc.yaml (its other deps and every comment are kept)

tests/test_layout.py checks dvc.yaml against `code_deps` (it imports this module); `lint-imports` checks the import
rules (pyproject.toml, [tool.importlinter]). Standard library only: runs in the project venv with nothing added.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("tasks", "flows")
WRITE_COMMAND = "python scripts/dvc_deps.py --write"


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


def covering_path(module: str) -> str:
    """What dvc.yaml lists for `module`: its role sub-package's directory (`tasks/training` for
    `tasks.training.lbfgs`), or its own file for a top-level module (`tasks/head.py`, `tasks/__init__.py`)."""
    rel = modules()[module].relative_to(REPO)
    return rel.parts[0] + "/" + rel.parts[1] if len(rel.parts) > 2 else rel.as_posix()


def code_deps(module: str) -> list[str]:
    """Repo-relative paths covering every module of `module`'s closure that holds code (`covering_path`): what its
    dvc.yaml stage must list as deps."""
    return sorted({covering_path(m) for m in closure(module) if not is_docstring_only(m)})


def write_dvc_deps(dvc_yaml: Path = REPO / "dvc.yaml") -> None:
    """Rewrite the project-module deps of every stage in `dvc_yaml` to its import closure (other deps and every
    comment are kept)."""
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write the code deps into dvc.yaml")
    args = parser.parse_args(argv)
    if str(REPO) not in sys.path:  # run as a script, sys.path[0] is scripts/: find the project's own packages
        sys.path.insert(0, str(REPO))
    from tasks.core.stages import STAGES

    if args.write:
        write_dvc_deps()
    for stage in STAGES:
        print(f"{stage}:")
        for dep in code_deps(f"tasks.{stage}"):
            print(f"      - {dep}")


if __name__ == "__main__":
    main()
