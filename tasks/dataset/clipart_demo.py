"""Demo data recipe: materialise the clip-art demo set from the Debian package `openclipart-png` into data/raw/.

Seven categories (animals, food, people, transportation, plants, buildings, tools) become seven classes; sub-folders
are kept (ingest takes the first folder level as the label). The package holds the same file in several
sub-folders: exact duplicates are skipped here by content hash. The package is public domain.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
from pathlib import Path

from tasks.core.errors import UserError, exit_on_user_error
from tasks.core.paths import default_paths
from tasks.core.progress import log

OPENCLIPART = Path("/usr/share/openclipart/png")
DEMO_CATEGORIES = ("animals", "food", "people", "transportation", "plants", "buildings", "tools")


def _files(category_dir: Path) -> list[Path]:
    out = []
    for dirpath, _, names in os.walk(category_dir, followlinks=True):
        out += [Path(dirpath) / n for n in names if n.lower().endswith(".png")]
    return sorted(out)


def materialise(dest: Path, categories: tuple[str, ...] = DEMO_CATEGORIES, per_class: int | None = None,
                source: Path = OPENCLIPART) -> dict[str, int]:
    """Copy (hard-link when possible) unique PNGs of each category into dest/<category>/...; return counts.

    Idempotent: files already present are left alone. `per_class` keeps the first N unique files (sorted by path)
    of each category, for small test sets.
    """
    if not source.is_dir():
        raise UserError(f"{source} not found: install the demo images with `apt-get install -y openclipart-png`")
    seen: set[str] = set()
    counts: dict[str, int] = {}
    for cat in categories:
        cdir = source / cat
        if not cdir.is_dir():
            raise UserError(f"{cdir}: no such category in openclipart-png")
        n = 0
        for f in _files(cdir):
            digest = hashlib.sha256(f.read_bytes()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            target = dest / cat / f.relative_to(cdir)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                shutil.copyfile(f, tmp)
                os.replace(tmp, target)
            n += 1
            if per_class is not None and n >= per_class:
                break
        counts[cat] = n
    return counts


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tasks.dataset.clipart_demo", description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, default=None, help="default: data/raw")
    ap.add_argument("--per-class", type=int, default=None, help="keep at most N images per class")
    args = ap.parse_args(argv)
    dest = args.dest or default_paths().raw
    counts = materialise(dest, per_class=args.per_class)
    log(f"demo data: {sum(counts.values())} unique clip-art images in {len(counts)} classes -> {dest} "
        f"({', '.join(f'{k} {v}' for k, v in counts.items())})")


if __name__ == "__main__":
    main()
