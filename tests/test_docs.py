"""The documentation points only at what exists: every dotted `tasks.`/`flows.` name in docstrings, comments, the
README, `docs/` and the model card template resolves; nothing points outside the repository; the README stays a
front door (at most 200 lines, the two quick-start commands first); every relative link lands on a file; every test
that `docs/guarantees.md` names as holding a guarantee exists.

Nothing here imports a project module beyond packages' docstring-only `__init__.py` files: a module is found with
`importlib.util.find_spec` (of a package's child only, so no module body runs) and its attributes are read from its
source with `ast`."""

from __future__ import annotations

import ast
import importlib.util
import io
import re
import subprocess
import tokenize
from functools import cache
from pathlib import Path

from tests.conftest import REPO

# `tasks.x.y` or `flows.x`, not part of a path (`a/tasks.py`) or of a longer dotted name (`x.tasks.y`)
DOTTED = re.compile(r"(?<![\w./-])((?:tasks|flows)(?:\.[A-Za-z_]\w*)+)")
DOCS = REPO / "docs"
QUICK_START = "bash scripts/demo.sh\nbash scripts/test.sh"
# spelled in two pieces so that this file does not hold what it looks for
FORBIDDEN = (".." + "/shared", "DESIGN" + ".md")


def _python_texts(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every docstring and comment of a Python file."""
    source = path.read_text()
    texts = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                texts.append((first.lineno, first.value.value))
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            texts.append((tok.start[0], tok.string))
    return texts


def _documents() -> list[tuple[Path, list[tuple[int, str]]]]:
    docs = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
    card = REPO / "tasks" / "registry" / "model_card.md.j2"
    if card.exists():
        docs.append(card)
    found = [(p, list(enumerate(p.read_text().splitlines(), 1))) for p in docs if p.exists()]
    for root in ("tasks", "flows"):
        found += [(p, _python_texts(p)) for p in sorted((REPO / root).rglob("*.py"))]
    return found


@cache
def _spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


@cache
def _top_level(origin: str) -> dict[str, ast.AST]:
    """Names a module defines at top level (defs, classes, assignments, imports; inside if/try too)."""
    names: dict[str, ast.AST] = {}

    def visit(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names[node.name] = node
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for sub in ast.walk(target):
                        if isinstance(sub, ast.Name):
                            names[sub.id] = node
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    names[(alias.asname or alias.name).split(".")[0]] = node
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "finalbody", []))

    visit(ast.parse(Path(origin).read_text()).body)
    return names


def _class_members(node: ast.ClassDef) -> set[str]:
    members = set()
    for sub in node.body:
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            members.add(sub.name)
        elif isinstance(sub, ast.AnnAssign) and isinstance(sub.target, ast.Name):
            members.add(sub.target.id)
        elif isinstance(sub, ast.Assign):
            members.update(t.id for t in sub.targets if isinstance(t, ast.Name))
    return members


def resolves(dotted: str) -> bool:
    """A module, or a module's top-level name (and a class's member below it)."""
    parts = dotted.split(".")
    spec = _spec(parts[0])
    i = 1
    # descend through packages only: find_spec of a package's child runs no module body but the package's
    while i < len(parts) and spec is not None and spec.submodule_search_locations is not None:
        child = _spec(".".join(parts[:i + 1]))
        if child is None:
            break
        spec, i = child, i + 1
    if spec is None:
        return False
    if i == len(parts):
        return True
    if spec.origin is None or not spec.origin.endswith(".py"):
        return False
    node = _top_level(spec.origin).get(parts[i])
    if node is None:
        return False
    if i + 1 < len(parts) and isinstance(node, ast.ClassDef):
        return parts[i + 1] in _class_members(node)
    return True


def test_every_dotted_name_in_docstrings_comments_and_docs_resolves():
    unresolved, seen = [], 0
    for path, texts in _documents():
        for line, text in texts:
            for offset, row in enumerate(text.splitlines() or [text]):
                for name in DOTTED.findall(row):
                    seen += 1
                    if not resolves(name):
                        unresolved.append(f"{path.relative_to(REPO)}:{line + offset}: {name}")
    assert seen > 50  # the scan reads what it should
    assert unresolved == []


def test_nothing_points_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    offending = []
    for name in tracked.decode().split("\0"):
        path = REPO / name
        if not name or not path.is_file():
            continue
        data = path.read_bytes()
        offending += [f"{name}: {word}" for word in FORBIDDEN if word.encode() in data]
    assert offending == []


def test_the_readme_is_a_front_door():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    quick = re.search(r"^## Quick start\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert quick, "README.md has a '## Quick start' section"
    block = re.search(r"^```[^\n]*\n(.*?)^```", quick.group(1), re.M | re.S)
    assert block and block.group(1).strip("\n") == QUICK_START


def test_docs_has_pages_and_every_relative_link_lands_on_a_file():
    pages = sorted(DOCS.glob("*.md"))
    assert len(pages) >= 5
    broken, checked = [], 0
    for page in [REPO / "README.md", *pages]:
        prose = re.sub(r"^```.*?^```|`[^`\n]*`", "", page.read_text(), flags=re.M | re.S)  # code is no link
        for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same page
            checked += 1
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert checked > len(pages)  # the README and the pages link to each other
    assert broken == []


def test_every_test_named_as_holding_a_guarantee_exists():
    named = set(re.findall(r"`(test_\w+)::(test_\w+)`", (DOCS / "guarantees.md").read_text()))
    assert len(named) >= 20  # the guarantees are there
    defined = {(f.stem, node.name) for f in (REPO / "tests").glob("test_*.py")
               for node in ast.parse(f.read_text()).body if isinstance(node, ast.FunctionDef)}
    assert sorted(named - defined) == []
