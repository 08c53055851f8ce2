"""Memory the server gives back: after a large or hostile request, RSS returns to where it was.

Three things keep freed memory in a long-running Python server that holds request bodies in threads: glibc's
per-thread arenas (one per worker thread, each keeping its freed chunks), glibc's dynamic mmap threshold (after a
large block is freed, blocks up to 32 MiB are served from the heap, which rarely shrinks), and ONNX Runtime's arena
(its largest batch's activations kept for good). `tune_allocator` fixes the first two before any thread starts; the
server trims the heap after large requests (`MemoryReturner`) and asks ONNX Runtime to shrink its arena after each
run (`tasks.inference_server.repository.ServedVersion`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
MMAP_THRESHOLD = 256 * 1024   # blocks at least this large are mmapped, and unmapped the moment they are freed
LARGE = 1024 * 1024           # a request body from this size on asks for a trim


def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def tune_allocator(arenas: int = 2) -> bool:
    """glibc only (no-op elsewhere): at most `arenas` malloc arenas and a fixed mmap threshold, so large buffers go
    back to the system when freed. Call before the server starts its threads. True if applied."""
    libc = _libc()
    if libc is None:
        return False
    libc.mallopt(M_ARENA_MAX, arenas)
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    libc.mallopt(M_TRIM_THRESHOLD, 4 * MMAP_THRESHOLD)
    return True


GROWTH = 16 * 1024 * 1024     # RSS this far above its settled level asks for a trim too


def rss_bytes() -> int:
    """This process's resident set size, from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class MemoryReturner:
    """Counts large requests; `release` (called by the server's watch loop, off the event loop) trims glibc's heaps
    when any happened since the last trim, or when RSS is GROWTH above its settled level (messages refused by gRPC's
    own size check never reach a handler, but their buffers were allocated all the same)."""

    def __init__(self):
        self._libc = _libc()
        self._pending = 0
        self._lock = threading.Lock()
        self.trims = 0
        self.last_trim = 0.0
        self._floor = rss_bytes()

    def note(self, nbytes: int) -> None:
        """A request of `nbytes` finished: remember to trim if it was large."""
        if nbytes >= LARGE:
            with self._lock:
                self._pending += 1

    def release(self) -> bool:
        """malloc_trim(0) if a large request finished since the last call or RSS is GROWTH above its floor (the lowest
        RSS after a trim); True if it trimmed. Memory really in use above the floor (a new model version) costs a trim
        per call that finds nothing to give back: about a millisecond, once per poll."""
        if self._libc is None:
            return False
        with self._lock:
            start = rss_bytes()
            if not (self._pending or start > self._floor + GROWTH):
                return False
            self._pending = 0
        self._libc.malloc_trim(0)
        self.trims += 1
        self.last_trim = time.monotonic()
        after = rss_bytes()
        self._floor = min(self._floor, after)
        return True
