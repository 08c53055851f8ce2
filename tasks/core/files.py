"""Safe file operations: atomic outputs (write to a temporary sibling, then rename, so no reader ever sees a
half-written file or folder), link-or-copy, and content hashing. A full disk during an atomic write is a one-line
`tasks.core.disk_space.DiskFull` (a UserError) naming the file, after the temp path is removed."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from tasks.core.disk_space import DiskFull, disk_full, is_disk_full

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str = "", durable: bool = False, needs: int | None = None) -> Iterator[Path]:
    """Yield a temp path beside `dest`; on success rename it onto `dest`, on error delete it.

    The temp name keeps `suffix` (e.g. ".parquet") so libraries that infer the format from the extension work.
    `durable`: the bytes reach the disk before the rename publishes them, and the rename before this returns (fsync
    of the file, then of the folder), so a power cut never leaves a published name over missing data.
    A full disk (or quota), in the caller's writer or here, raises `DiskFull` naming `dest` and the space it needed
    (`needs`, the file's size, when the caller knows it), with the temp file removed and `dest` untouched.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix or dest.suffix + ".tmp", dir=dest.parent)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(dest, exc, 0, needs) from None
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs should look like normal files
        if durable:
            _fsync(tmp_path)
        os.replace(tmp_path, dest)
        if durable:
            _fsync(dest.parent)
    except BaseException as exc:
        written = _size(tmp_path)
        full = not isinstance(exc, DiskFull) and is_disk_full(exc, dest.parent)  # judged before the temp file goes
        tmp_path.unlink(missing_ok=True)
        if full:
            raise disk_full(dest, exc, written, needs) from None
        raise


def _size(path: Path) -> int:
    """Bytes in `path` (a file, or a folder's files); 0 when it is gone."""
    try:
        if path.is_dir():
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return path.stat().st_size
    except OSError:
        return 0


@contextlib.contextmanager
def atomic_dir(dest: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temp directory beside `dest`; on success it replaces `dest` as one step (old contents removed).

    An existing `dest` is swapped with the new folder by one atomic exchange (Linux renameat2), so a reader sees the
    old folder or the new one, never neither; where the exchange is unsupported, by two renames in quick succession.
    `durable`: every file and folder inside is fsynced before the swap, and the parent folder after it.
    A full disk raises `DiskFull` naming `dest` (as `atomic_path` does), with the temp folder removed.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(dest, exc, 0) from None
        raise
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; outputs should look like normal folders
        if durable:
            for sub in sorted(tmp.rglob("*"), key=lambda p: len(p.parts), reverse=True):  # contents before folders
                _fsync(sub)
            _fsync(tmp)
        if not dest.exists():
            os.replace(tmp, dest)
        elif _exchange(tmp, dest):
            shutil.rmtree(tmp)  # now holds the old contents
        else:
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        if durable:
            _fsync(dest.parent)
    except BaseException as exc:
        written = _size(tmp)
        full = not isinstance(exc, DiskFull) and is_disk_full(exc, dest.parent)  # judged before the temp folder goes
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise disk_full(dest, exc, written) from None
        raise


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's entries to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (renameat2 with RENAME_EXCHANGE); False where the platform cannot."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


@functools.cache
def _libc():
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def atomic_write_text(dest: str | Path, text: str, durable: bool = False) -> None:
    """Write `text` to `dest` atomically (and durably: see `atomic_path`)."""
    with atomic_path(dest, durable=durable) as tmp:
        tmp.write_text(text)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link `src` to `dst` (same bytes, no extra disk), or copy it where links are not possible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def file_stat(path: str | Path) -> tuple[int, int]:
    """(size, mtime in ns) of a file, or (-1, -1) when it cannot be read (a path with a NUL byte included): enough to
    notice it changed."""
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except (OSError, ValueError):
        return -1, -1


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes. Memoised per process on (path, size, mtime): a run that asks about the same
    unchanged file many times (the backbone weights, for every fingerprint) reads it once."""
    st = os.stat(path)
    return _sha256_of(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
