"""The house by role, held to its rules: stages flat and independent, sub-packages layered, no import cycles, every
dvc.yaml stage listing the code it runs, cheap commands that stay cheap, one source of the telemetry settings."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from ruamel.yaml import YAML

from scripts.dvc_deps import WRITE_COMMAND, closure, code_deps, covering_path, is_docstring_only
from tasks.core.env import NO_TELEMETRY
from tasks.core.stages import STAGES
from tests.conftest import REPO, venv_env

# The import rules are import-linter contracts in pyproject.toml ([tool.importlinter]): the `layers` contract lists,
# highest first, the six stages (independent of each other), then the sub-packages of tasks/ by role.
_IMPORTLINTER = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
CONTRACTS = {c["id"]: c for c in _IMPORTLINTER["contracts"]}
STAGE_LAYER, *_ROLES_HIGHEST_FIRST = CONTRACTS["layers"]["layers"]
LAYERS = _ROLES_HIGHEST_FIRST[::-1]  # the sub-packages by role, lowest first: a layer never imports a higher one


def test_tasks_holds_the_six_stages_flat_and_the_rest_in_role_packages():
    flat = sorted(p.stem for p in (REPO / "tasks").glob("*.py") if p.stem != "__init__")
    assert flat == sorted(STAGES)
    packages = sorted(p.name for p in (REPO / "tasks").iterdir() if (p / "__init__.py").exists())
    assert packages == sorted(LAYERS)
    assert [s.strip() for s in STAGE_LAYER.split("|")] == list(STAGES), "the contract's top layer is the six stages"


def test_the_import_rules_hold():
    """`lint-imports` checks pyproject.toml's contracts: the layers (stages on top, independent of each other;
    lower sub-packages never import higher ones), nothing in tasks/ imports flows/, no import cycles. It reads every
    import statement, those inside functions included."""
    lint_imports = Path(sys.executable).parent / "lint-imports"
    assert lint_imports.exists(), "import-linter is missing: pip install -e '.[test]' (scripts/install.sh does)"
    proc = subprocess.run([str(lint_imports), "--no-logo", "--no-cache"], cwd=REPO, env=venv_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"lint-imports: broken contract(s) (pyproject.toml [tool.importlinter]):\n" \
                                 f"{proc.stdout[-6000:]}{proc.stderr[-2000:]}"
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in proc.stdout, proc.stdout[-2000:]


def test_sub_package_inits_import_nothing():
    for role in LAYERS:
        assert is_docstring_only(f"tasks.{role}"), f"tasks/{role}/__init__.py must hold only a docstring"


def test_each_dvc_stage_lists_what_covers_the_code_it_runs():
    stages = YAML(typ="safe").load((REPO / "dvc.yaml").read_text())["stages"]
    for name in STAGES:
        listed = sorted(d for d in stages[name]["deps"] if d.startswith(("tasks/", "flows/")))
        assert listed == code_deps(f"tasks.{name}"), (
            f"dvc.yaml stage {name}: code deps differ from what covers its import closure; `{WRITE_COMMAND}` (in the "
            f"repo root) updates them")
        covered = {m for m in closure(f"tasks.{name}") if not is_docstring_only(m)}
        assert all(covering_path(m) in listed for m in covered)
        assert not any(d.rstrip("/") in ("tasks", "flows") for d in stages[name]["deps"]), "sub-packages, not trees"
    # a stage that never imports training code does not re-run when it changes
    assert "tasks/training" not in code_deps("tasks.features")


def test_the_closure_counts_imports_inside_functions():
    # evaluate imports the fine-tune record at the top and scores ONNX through imports inside functions
    assert "tasks.runtime.onnx_classifier" in closure("tasks.evaluate")
    assert "tasks.training.mlp_fit" in closure("tasks.head")  # imported only when head.type is mlp


def _modules_after(code: str) -> set[str]:
    probe = code + ("\nimport sys\nprint('loaded:', *sorted(m for m in ('torch', 'prefect', 'sklearn') "
                    "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=venv_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(proc.stdout.strip().splitlines()[-1].split()[1:])


def test_cheap_commands_import_neither_torch_nor_prefect_nor_sklearn():
    help_run = ("from flows.cli import main\n"
                "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
                "try:\n    main(['predict', '--help'])\nexcept SystemExit:\n    pass\n")
    assert _modules_after(help_run) == set()


def test_predict_runs_without_torch_prefect_or_sklearn(built_project, tmp_path):
    paths, _, _ = built_project
    first = next(iter(sorted((paths.root / "data" / "raw").rglob("*.png"))))
    out = tmp_path / "p.csv"
    args = ["predict", "--model", str(paths.onnx), str(first), "--out", str(out)]
    run = f"from flows.cli import main\nmain({args!r})"
    assert _modules_after(run) == set()
    assert out.read_text().count("\n") == 2  # header + one prediction


def test_telemetry_settings_agree_across_python_shell_and_dvc():
    shell = dict(re.findall(r"^export (\w+)=(\S+)$", (REPO / "scripts" / "env.sh").read_text(), re.M))
    for key, value in NO_TELEMETRY.items():
        assert shell.get(key) == value, f"scripts/env.sh: {key} should be {value}"
    assert "source scripts/env.sh" in (REPO / ".ci" / "run").read_text()
    dvc = configparser.ConfigParser()
    dvc.read(REPO / ".dvc" / "config")
    assert dvc["core"]["analytics"] == "false" and dvc["core"]["check_update"] == "false"
    assert NO_TELEMETRY["DVC_NO_ANALYTICS"] == "1"
