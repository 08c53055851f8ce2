"""Shared fixtures: a small real clip-art set, project directories, one Prefect test harness per session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("PREFECT_HOME", str(REPO / ".prefect" / "test"))
# `headstart run` in a test gets Prefect's temporary per-run server, never the project's server that stays up (the
# one test of that server stops it): a test run leaves no process behind
os.environ.setdefault("HEADSTART_PREFECT_SERVER", "temporary")

# no telemetry, no hub downloads: tasks.core.env sets them (as it does for every entry point) before anything heavy
import tasks.core.env  # noqa: E402,F401
from tasks.core.params import load_params, write_overrides  # noqa: E402
from tasks.core.paths import ProjectPaths  # noqa: E402

# Small and fast, still real: ~50 images per class of 7 clip-art classes at 96 px (a few seconds to extract).
TEST_OVERRIDES = [
    "backbone.input_size=96",
    "ingest.val_fraction=0.2",
    "ingest.test_fraction=0.3",
    "export.parity_images=40",
]
PER_CLASS = 50


def venv_env() -> dict:
    """Environment for subprocesses: this interpreter's bin dir first on PATH (dvc stages call `python`)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 600,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command in a project directory (in `env`, default `venv_env()`), capturing text output."""
    proc = subprocess.run(cmd, cwd=cwd, env=env or venv_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def clipart_raw(tmp_path_factory) -> Path:
    """A real clip-art subset (Debian openclipart-png), PER_CLASS unique images for each of the 7 demo classes."""
    from tasks.dataset.clipart_demo import materialise

    dest = tmp_path_factory.mktemp("clipart") / "raw"
    materialise(dest, per_class=PER_CLASS)
    return dest


def make_project(dest: Path, raw: Path | None, overrides: list[str] = (), dvc: bool = False) -> ProjectPaths:
    """A runnable project at `dest`: params.yaml (+ overrides), dvc.yaml and tasks/ (DVC hashes them as deps),
    data/raw linked from `raw`; with `dvc`, also a git repo with DVC initialised like ours (.dvc/config)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", dest / "params.yaml")
    shutil.copy(REPO / "dvc.yaml", dest / "dvc.yaml")
    shutil.copytree(REPO / "tasks", dest / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    if raw is not None:
        shutil.copytree(raw, dest / "data" / "raw", copy_function=os.link)
    # the data is at data/raw, read by the image backbone, whatever the checkout's params.yaml says (a user's own
    # source, or `headstart demo --text`'s text backbone, must not leak in); text tests set their backbone themselves
    write_overrides(["ingest.source=data/raw", "backbone.name=tf_efficientnet_lite0", *TEST_OVERRIDES, *overrides],
                    dest / "params.yaml")
    if dvc:
        run(["git", "init", "-q"], dest)
        run(["git", "config", "user.email", "test@example.invalid"], dest)
        run(["git", "config", "user.name", "test"], dest)
        run([sys.executable, "-m", "dvc", "init", "-q"], dest)
        shutil.copy(REPO / ".dvc" / "config", dest / ".dvc" / "config")
        shutil.copy(REPO / ".gitignore", dest / ".gitignore")
        (dest / "models").mkdir(exist_ok=True)
        shutil.copy(REPO / "models" / ".gitignore", dest / "models" / ".gitignore")
    return ProjectPaths(dest)


def dvc_status_clean(root: Path) -> bool:
    """True when `dvc status` reports nothing to reproduce."""
    from flows.dvc_sync import dvc_command

    return dvc_command(root, "status", "--json").strip() in ("{}", "")


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def project_params(paths: ProjectPaths, overrides: list[str] = ()):
    """Validated params of a test project."""
    return load_params(paths.root / "params.yaml", list(overrides))


@pytest.fixture(scope="session")
def built_project(tmp_path_factory, clipart_raw):
    """A project on which every stage ran once (stage functions called directly, no Prefect, no DVC)."""
    from tasks.core.stages import STAGES, stage_function

    paths = make_project(tmp_path_factory.mktemp("built"), clipart_raw)
    params = project_params(paths)
    results = {name: stage_function(name)(params, paths) for name in STAGES}
    return paths, params, results


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test harness (a temporary local API) for the whole session: it costs ~15 s to start."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def pytest_addoption(parser):
    parser.addoption("--run-slow-exports", action="store_true", default=False,
                     help="also export the catalog's heaviest backbones (vgg16: 0.5 GB) in tests/test_backbones.py")
