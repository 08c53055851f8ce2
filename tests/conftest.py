"""Shared fixtures: a small real clip-art set, project directories, one Prefect test harness per session."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("PREFECT_HOME", str(REPO / ".prefect" / "test"))
# `headstart run` in a test gets Prefect's temporary per-run server, never the project's server that stays up (the
# one test of that server stops it): a test run leaves no process behind
os.environ.setdefault("HEADSTART_PREFECT_SERVER", "temporary")

# no telemetry, no hub downloads: tasks.core.env sets them (as it does for every entry point) before anything heavy
import tasks.core.env  # noqa: E402,F401

# scratch projects are built in tests/scratch_project.py, which the benchmarks share; re-exported for the tests
from tests.scratch_project import TEST_OVERRIDES, make_project, project_params, run, venv_env  # noqa: E402,F401

# Small and fast, still real: ~50 images per class of 7 clip-art classes (at 96 px: TEST_OVERRIDES).
PER_CLASS = 50


@pytest.fixture(scope="session")
def clipart_raw(tmp_path_factory) -> Path:
    """A real clip-art subset (Debian openclipart-png), PER_CLASS unique images for each of the 7 demo classes."""
    from tasks.dataset.clipart_demo import materialise

    dest = tmp_path_factory.mktemp("clipart") / "raw"
    materialise(dest, per_class=PER_CLASS)
    return dest


def dvc_status_clean(root: Path) -> bool:
    """True when `dvc status` reports nothing to reproduce."""
    from flows.dvc_sync import dvc_command

    return dvc_command(root, "status", "--json").strip() in ("{}", "")


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
