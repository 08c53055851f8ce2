"""Reading the files a data drop names, which may be anything: only regular files are read, never more than a limit.

A folder or a CSV can name a device (/dev/zero, endless), a FIFO (blocks forever), /dev/stdin, a /proc or /sys file
(whose size says 0 whatever it holds), a path with a NUL byte, or a file that grows while it is read. `special_path`
rejects such paths by name, `read_regular` by what the opened file is: it opens without blocking (a FIFO), checks
the opened descriptor (no swap between check and read), and reads at most `limit` + 1 bytes whatever the size said.
Neither raises for a bad file: they give the reason it is not read, for rejected.csv.
"""

from __future__ import annotations

import os
import stat as stat_module
from pathlib import Path

_PSEUDO = ("/dev", "/proc", "/sys")  # kernel interfaces, not data (stdin, devices, process state)
_DATA_UNDER_DEV = ("/dev/shm",)  # shared memory: a tmpfs of ordinary files


def _under(path: str, roots: tuple[str, ...]) -> str | None:
    return next((r for r in roots if path == r or path.startswith(r + "/")), None)


def special_path(path: Path) -> str | None:
    """Why `path` is not a data file by its name alone (a NUL byte, or a path into /dev, /proc or /sys, as written
    or where its links lead), or None."""
    text = str(path)
    if "\x00" in text:
        return "the path holds a NUL byte: not a file name"
    for where in (os.path.abspath(text), os.path.realpath(text)):
        root = _under(where, _PSEUDO)
        if root and not _under(where, _DATA_UNDER_DEV):
            return f"a special file under {root} ({where}), not data: not read"
    return None


def kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in ((stat_module.S_ISDIR, "a folder"), (stat_module.S_ISCHR, "a character device"),
                       (stat_module.S_ISBLK, "a block device"), (stat_module.S_ISFIFO, "a FIFO"),
                       (stat_module.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: Path, limit: int, key: str) -> tuple[int | None, os.stat_result | None, str]:
    """(open descriptor, its stat, "") of a regular file of at most `limit` bytes, else (None, None, reason). The
    caller closes the descriptor. `key` names the limit's param in the reason."""
    why = special_path(path)
    if why:
        return None, None, why
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)  # O_NONBLOCK: opening a FIFO cannot hang
    except FileNotFoundError:
        return None, None, "file not found"
    except OSError as exc:
        return None, None, f"unreadable ({exc.strerror})"
    st = os.fstat(fd)
    why = ""
    if not stat_module.S_ISREG(st.st_mode):
        why = f"not a regular file ({kind(st.st_mode)}): not read"
    elif st.st_size > limit:
        why = f"too big: {st.st_size:,} bytes > limit {limit:,} ({key}); not read"
    if why:
        os.close(fd)
        return None, None, why
    return fd, st, ""


def read_regular(path: Path, limit: int, key: str) -> tuple[bytes | None, os.stat_result | None, str]:
    """(bytes, stat, "") of a regular file within `limit` bytes, else (None, None, reason); never raises for a bad
    file. At most `limit` + 1 bytes are read, so a file that grows while it is read is rejected, not followed."""
    fd, st, why = open_regular(path, limit, key)
    if fd is None:
        return None, None, why
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        return None, None, f"unreadable ({exc.strerror})"
    if len(data) > limit:
        return None, None, f"too big: grew past the limit {limit:,} ({key}) while it was read; not read"
    return data, st, ""
