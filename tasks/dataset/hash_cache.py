"""Content hashes remembered by file size and mtime: a file whose size and mtime have not moved since it was last
hashed is not read again, so a re-run of ingest over unchanged data (every `headstart run` and `retrain`) costs a
`stat` per file. Kept in `data/prepared/hashes.parquet`, beside the manifest (not a DVC output: a cache, rebuilt
when missing or unreadable)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tasks.core.files import atomic_path, file_stat, sha256_file
from tasks.core.progress import log

if TYPE_CHECKING:
    import pandas as pd


class HashCache:
    """sha256 by absolute path, valid while the file's (size, mtime) are the ones recorded with it."""

    def __init__(self, path: Path):
        self.path = path
        self._rows: dict[str, tuple[int, int, str]] = {}
        if path.exists():
            import pandas as pd

            try:
                df = pd.read_parquet(path)
                self._rows = {p: (int(s), int(m), h) for p, s, m, h in
                              zip(df["path"], df["size"], df["mtime_ns"], df["sha256"])}
            except Exception as exc:  # a damaged cache only costs re-hashing: say so, go on
                log(f"warning: {path} cannot be read ({str(exc).splitlines()[0][:80]}); every file is hashed again")
                self._rows = {}

    def lookup(self, file: Path) -> str | None:
        """The remembered sha256 of `file` if its size and mtime are unchanged, else None."""
        row = self._rows.get(str(file))
        return row[2] if row is not None and file_stat(file) == row[:2] else None

    def remember(self, file: Path, stat: tuple[int, int], sha256: str) -> None:
        """Record `file`'s hash with the (size, mtime) it had when it was read."""
        self._rows[str(file)] = (*stat, sha256)

    def sha256(self, file: Path) -> str:
        """The file's sha256: remembered, or read (and remembered)."""
        known = self.lookup(file)
        if known is None:
            stat = file_stat(file)
            known = sha256_file(file)
            self.remember(file, stat, known)
        return known

    def save(self, keep: set[str] | None = None) -> None:
        """Write the cache atomically (only the paths in `keep`, when given)."""
        import pandas as pd

        rows = [(p, *r) for p, r in self._rows.items() if keep is None or p in keep]
        df = pd.DataFrame(rows, columns=["path", "size", "mtime_ns", "sha256"])
        with atomic_path(self.path) as tmp:
            df.to_parquet(tmp, index=False)
