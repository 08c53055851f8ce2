"""A full disk as a user error: one line naming the file that could not be written, the space it needed and the space
left, instead of `OSError: [Errno 28] No space left on device` and a traceback.

`tasks.core.files.atomic_path` and `atomic_dir` turn a full disk (or an exceeded quota) into `DiskFull` after removing
their temp path, so the line is true: nothing half-written is left, and what earlier steps committed (the feature
store's shards, say) is kept for the rerun.
"""

from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path

from tasks.core.errors import UserError

_FULL = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = ("no space left on device", "disk quota exceeded")
_SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")  # Python's message for a short write to a full disk


class DiskFull(UserError):
    """A write failed because its filesystem is full (or the user's quota is used up)."""

    def __init__(self, message: str, path: Path, needed: int):
        super().__init__(message)
        self.path, self.needed = path, needed


def is_disk_full(exc: BaseException, folder: Path | None = None) -> bool:
    """True when `exc`, or an exception it was raised from or while handling, says the disk or quota is full. Writers
    that wrap the OSError (pyarrow, C++ extensions) are recognised by their message; a short write without an errno
    (numpy's "15360 requested and 6112 written") when `folder`'s filesystem has less free space than the rest."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL:
            return True
        if any(text in str(exc).lower() for text in _FULL_TEXT):
            return True
        rest = _short_write(exc)
        if rest and folder is not None and (_free_bytes(folder) or 0) < rest:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _short_write(exc: BaseException) -> int:
    """Bytes a short write still had to write ("327680 requested and 185312 written" -> 142368), else 0."""
    m = _SHORT_WRITE.search(str(exc))
    return int(m.group(1)) - int(m.group(2)) if m else 0


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def disk_full(dest: Path, exc: BaseException, written: int, needed: int | None = None) -> DiskFull:
    """The `DiskFull` for a failed write of `dest`: `written` bytes reached its temp file before the disk filled;
    `needed` is the file's full size when the caller knows it, else the message gives a lower bound: what was
    written plus what the failing write still had to write ("at least"), or what was written ("more than")."""
    dest = Path(dest)
    bound = ""
    if needed is None:
        rest = _short_write(exc)
        needed, bound = written + rest, ("at least " if rest else "more than ")
    free = _free_bytes(dest.parent)
    need = f"it needs {bound}{needed:,} bytes" if needed or not bound else "it needs more space than is free"
    left = f", {free:,} bytes are free on its filesystem" if free is not None else ""
    return DiskFull(f"no space left on device: could not write {dest} ({need}{left}); free some space (or move the "
                    f"folder to a larger disk) and rerun: what was written before is kept, nothing half-written is "
                    f"left", dest, needed)


def disk_full_anywhere(exc: BaseException, doing: str) -> DiskFull | None:
    """A `DiskFull` for a full disk met outside `atomic_path` (a writer that names its own temp file), or None when
    `exc` is something else. `doing` says what was running (e.g. "stage features") when the file is not known."""
    if isinstance(exc, DiskFull):
        return exc
    if not is_disk_full(exc):
        return None
    cause: BaseException | None = exc
    while cause is not None and not getattr(cause, "filename", None):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        return disk_full(Path(cause.filename), exc, 0)
    return DiskFull(f"no space left on device during {doing}; free some space (or move the project's data/ and "
                    f"models/ to a larger disk) and rerun: what was written before is kept", Path(), 0)
