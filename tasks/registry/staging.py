"""The staging area of a promotion, `models/.promotion/`, and the renames that publish out of it.

Every file a promotion writes is first written here, fsynced, then moved into place by one rename (a version folder,
the champion pointer) or one atomic exchange (the deploy repository's model folder). No temporary name ever appears
inside the registry or the deploy repository, so a kill at any moment leaves nothing there that Triton or a reader
could mistake for a model; what a kill leaves here, the next promotion deletes (`wipe_staging`).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import UserError
from tasks.core.paths import ProjectPaths
from tasks.registry.layout import ARTIFACTS

CRASH_ENV = "HEADSTART_CRASH_AT"
_UMASK = os.umask(0)
os.umask(_UMASK)


def crash_point(phase: str) -> None:
    """Test hook: when the environment names this phase in HEADSTART_CRASH_AT, the process kills itself with SIGKILL
    here, as `kill -9` or a power cut would (no cleanup handler runs). A no-op otherwise."""
    if os.environ.get(CRASH_ENV) == phase:
        os.kill(os.getpid(), signal.SIGKILL)


def staging_dir(paths: ProjectPaths) -> Path:
    """The staging area (outside every DVC-tracked and deployable folder, on the same filesystem as them)."""
    return paths.models / ".promotion"


def new_staging_folder(paths: ProjectPaths, prefix: str) -> Path:
    """A fresh, empty folder in the staging area, with a normal folder's permissions (it may be renamed into the
    deploy repository, which a server running as another user reads)."""
    staging_dir(paths).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}.", dir=staging_dir(paths)))
    os.chmod(folder, 0o777 & ~_UMASK)  # mkdtemp makes 0700
    return folder


def wipe_staging(paths: ProjectPaths) -> int:
    """Delete everything a previous (killed) promotion left in the staging area; returns how many entries."""
    folder = staging_dir(paths)
    left = list(folder.iterdir()) if folder.exists() else []
    shutil.rmtree(folder, ignore_errors=True)
    return len(left)


@dataclass(frozen=True)
class Candidate:
    """A private copy of the candidate's files, taken once: the gate judges these bytes and promotion publishes them,
    whatever happens to models/model.onnx meanwhile."""

    folder: Path
    sha256: str

    @property
    def onnx(self) -> Path:
        return self.folder / "model.onnx"

    @property
    def classes(self) -> list[str]:
        return [c for c in (self.folder / "labels.txt").read_text().split("\n") if c]


def snapshot_candidate(paths: ProjectPaths) -> Candidate:
    """Copy the candidate (models/model.onnx, labels.txt, MODEL_CARD.md) into the staging area and hash the copy."""
    folder = new_staging_folder(paths, "candidate")
    for name in ARTIFACTS:
        try:
            shutil.copyfile(paths.models / name, folder / name)
        except FileNotFoundError:
            if name != "MODEL_CARD.md":
                raise UserError(f"{paths.models / name} not found: build a candidate first (`headstart run` or "
                                f"`dvc repro`)") from None
    # the card's pictures, where its relative links (`plots/<name>.png`) find them in the version's folder too
    for png in sorted(paths.plots.glob("*.png")):
        (folder / "plots").mkdir(exist_ok=True)
        shutil.copyfile(png, folder / "plots" / png.name)
    with open(folder / "model.onnx", "rb") as f:
        sha = hashlib.file_digest(f, "sha256").hexdigest()
    return Candidate(folder, sha)


def fsync_tree(folder: Path) -> None:
    """Every file and folder under `folder`, then `folder` itself, reach the disk."""
    for sub in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        fsync_path(sub)
    fsync_path(folder)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_in(staged: Path, dest: Path) -> None:
    """Publish a complete, fsynced staged file or folder at `dest` (which must not be a folder already) by one
    rename, and make the rename durable."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    _rename(staged, dest)
    fsync_path(dest.parent)


def write_staged(paths: ProjectPaths, dest: Path, text: str) -> None:
    """Write `text` to `dest` through the staging area: written and fsynced there, then renamed over `dest`."""
    staged = new_staging_folder(paths, "file") / dest.name
    staged.write_text(text)
    fsync_path(staged)
    move_in(staged, dest)


def move_in_unique(staged: Path, parent: Path, stem: str) -> Path:
    """Rename the folder `staged` to `parent/stem`, or `stem-1`, `stem-2`... when taken; returns where it went."""
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1000):
        dest = parent / (stem if n == 0 else f"{stem}-{n}")
        if dest.exists():
            continue
        try:
            _rename(staged, dest)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):  # taken meanwhile
                continue
            raise
        fsync_path(parent)
        return dest
    raise UserError(f"{parent}: 1000 folders named {stem}[-n] already; clean it up")


def swap_in(staged: Path, dest: Path) -> None:
    """Replace the folder `dest` by the complete, fsynced folder `staged` as one step (Linux renameat2
    RENAME_EXCHANGE): a reader sees the old folder or the new one. The old contents end up at `staged`, in the
    staging area, and are deleted. Where the exchange is unsupported, two renames: a kill between them leaves `dest`
    absent, which the next promotion rebuilds."""
    if not dest.exists():
        move_in(staged, dest)
        return
    if not _exchange(staged, dest):
        old = staged.with_name(staged.name + ".old")
        _rename(dest, old)
        _rename(staged, dest)
        staged = old
    fsync_path(dest.parent)
    crash_point("deploy-swapped")
    shutil.rmtree(staged)


def _rename(src: Path, dest: Path) -> None:
    try:
        os.rename(src, dest)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise UserError(f"{dest.parent} is on another filesystem than {src.parent}: models/ must be one "
                            f"filesystem for a promotion to be atomic") from None
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (renameat2 with RENAME_EXCHANGE); False where the platform cannot."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # the filesystem or kernel cannot exchange
        return False
    if err == errno.EXDEV:
        _rename(a, b)  # raises the one-line error
    raise OSError(err, os.strerror(err), str(b))


@functools.cache
def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
