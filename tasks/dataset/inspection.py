"""Inspecting one ingest candidate: read it (regular files within a size limit only), key it by content, and
check it decodes; a candidate that fails gets a rejection reason, never an exception."""

from __future__ import annotations

import hashlib
import io
import os

from tasks.core.params import IngestParams
from tasks.dataset.hash_cache import HashCache
from tasks.dataset.images import check_image
from tasks.dataset.regular_files import read_regular
from tasks.dataset.sources import Candidate
from tasks.dataset.texts import check_decoded, decode_text


def _read(c: Candidate, limit: int, key: str) -> tuple[bytes | None, os.stat_result | None]:
    """(bytes, stat) of a regular file within `limit` bytes (`tasks.dataset.regular_files`); else (None, None) with
    `c.reason` set: a device, FIFO, /dev/stdin or /proc file is never read, an endless one never read to its end."""
    data, st, c.reason = read_regular(c.path, limit, key)
    return data, st


def inspect_image(c: Candidate, p: IngestParams, known: dict[str, tuple[int, int]], hashes: HashCache) -> Candidate:
    """Hash the bytes and (unless this exact content was validated before) fully decode the image. A file whose
    size and mtime have not moved since it was hashed, with content validated before, is not read at all. Only
    regular files within `ingest.max_file_bytes` are read (a CSV can name /dev/zero or a FIFO)."""
    cached = hashes.lookup(c.path)
    if cached in known:
        c.sha256, (c.width, c.height) = cached, known[cached]
        return c
    data, st = _read(c, p.max_file_bytes, "ingest.max_file_bytes")
    if data is None:
        return c
    c.sha256 = hashlib.sha256(data).hexdigest()
    hashes.remember(c.path, (st.st_size, st.st_mtime_ns), c.sha256)
    if c.sha256 in known:
        c.width, c.height = known[c.sha256]
        return c
    check = check_image(io.BytesIO(data), p.max_pixels)
    c.width, c.height, c.reason = check.width, check.height, check.reason
    return c

def inspect_text(c: Candidate, p: IngestParams) -> Candidate:
    """Decode, check and normalise one text (a file, or a CSV cell); its sha256 is that of the normalised text."""
    if c.text is not None:
        check = check_decoded(c.text, p.max_text_bytes)
    else:
        data, _ = _read(c, p.max_text_bytes, "ingest.max_text_bytes")
        if data is None:
            return c
        check = decode_text(data, p.text_encoding, p.max_text_bytes)
    c.reason = check.reason
    if not check.reason:
        c.text, c.sha256 = check.text, check.sha256
        c.width, c.height = len(check.text), check.text.count("\n") + 1
    return c
