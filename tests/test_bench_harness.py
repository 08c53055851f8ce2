"""The bench harness: paired timing gives JSON rows with medians and a ratio; every bench uses the harness (or says
it does not run headstart's code path by living in bench/not_headstart_path/), runs as a module, and neither patches
sys.path nor embeds a child program in a string."""

from __future__ import annotations

import ast
import json
import re
import time
from pathlib import Path

import pytest

from tests.scratch_project import REPO

BENCH = REPO / "bench"
NOT_HEADSTART_PATH = BENCH / "not_headstart_path"


def bench_scripts() -> list[Path]:
    """Every bench script: bench/*.py and the scripts of its sub-packages (not bench/out/, where runs leave scratch
    projects), neither packages' __init__ nor the harness's own helpers (_*.py)."""
    def in_bench_package(p: Path) -> bool:
        rel = p.relative_to(BENCH)
        return all((BENCH.joinpath(*rel.parts[:i]) / "__init__.py").is_file() for i in range(len(rel.parts)))

    return sorted(p for p in BENCH.rglob("*.py")
                  if p.relative_to(BENCH).parts[0] != "out" and in_bench_package(p)
                  and p.name != "__init__.py" and not p.name.startswith("_"))


def _imports_harness(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "bench._harness":
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "bench" and any(a.name == "_harness"
                                                                               for a in node.names):
            return True
        if isinstance(node, ast.Import) and any(a.name == "bench._harness" for a in node.names):
            return True
    return False


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring nodes of the module, its classes and functions."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


CODE_LINE = re.compile(r"^\s*(import [\w.]+|from [\w.]+ import \w)", re.MULTILINE)


def embedded_child_python(tree: ast.Module) -> list[str]:
    """String constants (not docstrings) that are Python run by a child: a "-c" argument, or a string holding import
    statements."""
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if node.value == "-c" or CODE_LINE.search(node.value):
                found.append(node.value[:60])
    return found


def test_paired_timing_gives_json_rows_with_medians_and_a_ratio(tmp_path, monkeypatch, capsys):
    from bench import _harness

    monkeypatch.setattr(_harness, "OUT", tmp_path)
    calls = []

    def fast():
        calls.append("baseline")
        time.sleep(0.01)

    def slow():
        calls.append("candidate")
        time.sleep(0.03)

    r = _harness.paired(fast, slow, reps=4, warmup=1)
    assert calls.count("baseline") == calls.count("candidate") == 5  # 1 warm-up + 4 timed each
    assert len(r.baseline_runs) == len(r.candidate_runs) == r.reps == 4
    assert r.candidate_s > r.baseline_s > 0
    assert 1.5 < r.ratio < 6 and r.speedup == pytest.approx(1 / r.ratio)

    row = _harness.emit("Is slow slower than fast?", bench="harness_selftest", case="sleep", **r.row())
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    stored = [json.loads(line) for line in (tmp_path / "harness_selftest.jsonl").read_text().splitlines()]
    assert printed == stored[-1] == json.loads(json.dumps(row))
    assert {"bench", "question", "at", "case", "baseline_s", "candidate_s", "ratio", "speedup", "reps",
            "baseline_runs", "candidate_runs"} <= set(printed)
    assert printed["bench"] == "harness_selftest" and printed["question"] == "Is slow slower than fast?"
    assert printed["ratio"] == pytest.approx(r.ratio, abs=1e-3)


def test_paired_runs_commands_as_whole_processes_and_the_hook_before_each_run(tmp_path):
    import sys

    from bench import _harness

    sides = []
    cmd = [sys.executable, "-m", "bench._startup_baseline"]
    r = _harness.paired(cmd, cmd, reps=2, warmup=0, cwd=REPO, before=sides.append)
    assert sides.count("baseline") == sides.count("candidate") == 2
    assert r.baseline_s > 0 and r.candidate_s > 0 and r.ratio > 0


def test_emit_names_the_calling_bench_by_its_module(tmp_path, monkeypatch):
    from bench import _harness

    monkeypatch.setattr(_harness, "OUT", tmp_path)
    assert _harness._bench_name({"__name__": "bench.head_change_cost"}) == "head_change_cost"
    assert _harness._bench_name({"__name__": "__main__", "__file__": "/x/bench/which_head.py"}) == "which_head"


def test_a_scratch_project_is_built_by_the_test_fixtures_builder_with_the_shipped_params(tmp_path):
    from bench._harness import scratch_project, stage_params

    paths = scratch_project(tmp_path / "p", None, overrides=["head.C=0.3"])
    params = stage_params(paths)
    assert (paths.root / "dvc.yaml").is_file() and (paths.root / "tasks").is_dir()
    assert params.backbone.input_size == 224 and params.head.C == 0.3  # shipped size, not the tests' 96 px
    tests_like = scratch_project(tmp_path / "t", None, test_defaults=True)
    assert stage_params(tests_like).backbone.input_size == 96


def test_every_bench_uses_the_harness_runs_as_a_module_and_embeds_no_child_python():
    scripts = bench_scripts()
    assert len(scripts) >= 15
    problems = []
    for path in [*scripts, BENCH / "_harness.py"]:
        rel = path.relative_to(REPO).as_posix()
        source = path.read_text()
        tree = ast.parse(source)
        outside = NOT_HEADSTART_PATH not in path.parents
        if path in scripts and outside and not _imports_harness(tree):
            problems.append(f"{rel}: does not import bench._harness (or belongs in bench/not_headstart_path/)")
        if "sys.path" in source:
            problems.append(f"{rel}: touches sys.path (run benches as modules: python -m bench.<name>)")
        for s in embedded_child_python(tree):
            problems.append(f"{rel}: embeds child Python in a string ({s!r}); run a function of the bench "
                            f"(bench._harness.run_child) instead")
        if ".venv/bin/python bench/" in source or "python bench/" in source:
            problems.append(f"{rel}: documents running it as a script; it runs as `python -m bench.<name>`")
    assert problems == []


def test_benches_outside_headstarts_path_say_so_in_their_folder_and_name():
    for path in NOT_HEADSTART_PATH.glob("*.py"):
        if path.name != "__init__.py":
            assert "reimplemented" in path.stem, path
            assert "NOT HEADSTART'S CODE PATH" in (ast.get_docstring(ast.parse(path.read_text())) or ""), path


def test_results_md_runs_only_benches_that_exist():
    text = (BENCH / "RESULTS.md").read_text()
    modules = set(re.findall(r"python -m (bench(?:\.\w+)+)", text))
    assert modules, "RESULTS.md names no bench command"
    missing = sorted(m for m in modules if not (REPO / (m.replace(".", "/") + ".py")).is_file())
    assert missing == []
    assert not re.search(r"bench/\w+\.py", text.replace("bench/_harness.py", "")), \
        "RESULTS.md still names a bench by its script path"
