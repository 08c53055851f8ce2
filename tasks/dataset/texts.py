"""Texts as ingest accepts them: decoded by one rule, checked, normalised, and keyed by the sha256 of the result.

Decoding: a byte-order mark (UTF-8, UTF-16, UTF-32) names the encoding; otherwise `ingest.text_encoding` (UTF-8 by
default) is tried, strictly. Rejected, each with its reason: too large, binary (a NUL byte, or more than 10 % control
characters), not decodable, empty or whitespace only.

Normalisation (`TEXT_NORMALISATION`): Unicode NFC, line ends `\\r\\n` / `\\r` -> `\\n`, surrounding whitespace
stripped. Two files that differ only in those ways are the same text (one sha256, a duplicate). The normalised text
is what the manifest stores and every later stage reads; the tokenizer lower-cases and splits it inside the model.
"""

from __future__ import annotations

import codecs
import hashlib
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from tasks.dataset.regular_files import read_regular

TEXT_NORMALISATION = "nfc+lf+strip/v1"  # part of the feature fingerprint: change it deliberately
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_ALLOWED_CONTROL = {"\t", "\n", "\r", "\f", "\v"}


@dataclass
class TextCheck:
    """A decoded, normalised text, or why there is none."""

    text: str = ""
    reason: str = ""

    @property
    def sha256(self) -> str:
        return text_sha256(self.text)


def normalise_text(text: str) -> str:
    """NFC, LF line ends, no surrounding whitespace: the form that is hashed, stored and tokenized."""
    return unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n")).strip()


def text_sha256(text: str) -> str:
    """The manifest key of a normalised text: sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _control_share(text: str) -> float:
    sample = text[:20_000]
    bad = sum(1 for ch in sample if unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROL)
    return bad / max(1, len(sample))


def check_decoded(text: str, max_bytes: int) -> TextCheck:
    """Check and normalise a text that is already a string (a CSV cell)."""
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > max_bytes:
        return TextCheck(reason=f"too big: {size:,} bytes > limit {max_bytes:,} (ingest.max_text_bytes)")
    if "\x00" in text or _control_share(text) > 0.10:
        return TextCheck(reason="binary: NUL bytes or control characters, not text")
    normalised = normalise_text(text)
    if not normalised:
        return TextCheck(reason="empty: no text, or whitespace only")
    return TextCheck(normalised)


def decode_text(data: bytes, encoding: str, max_bytes: int) -> TextCheck:
    """Decode file bytes by the rule in the module docstring, then `check_decoded`."""
    if len(data) > max_bytes:
        return TextCheck(reason=f"too big: {len(data):,} bytes > limit {max_bytes:,} (ingest.max_text_bytes)")
    declared = next((enc for bom, enc in _BOMS if data.startswith(bom)), None)
    if declared is None and b"\x00" in data[:8192]:
        return TextCheck(reason="binary: NUL bytes, not text (or UTF-16/32 without a byte-order mark)")
    enc = declared or encoding
    try:
        text = data.decode(enc)
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        return TextCheck(reason=f"not valid {codecs.lookup(enc).name} (byte 0x{bad} at offset {exc.start}); if "
                                f"these files use another encoding, set ingest.text_encoding (e.g. cp1252)")
    return check_decoded(text, max_bytes)


DEFAULT_MAX_TEXT_BYTES = 2**20  # ingest.max_text_bytes' default: what predict accepts from a file


def read_text_file(path: Path, encoding: str = "utf-8", max_bytes: int = DEFAULT_MAX_TEXT_BYTES) -> tuple[str | None, str]:
    """(normalised text, "") or (None, reason) for a text file, by ingest's rule; never raises for a bad file, and
    reads only a regular file, at most `max_bytes` of it (`tasks.dataset.regular_files`: a FIFO or /dev/zero named
    for prediction is refused, not read)."""
    data, _, why = read_regular(path, max_bytes, "ingest.max_text_bytes")
    if data is None:
        return None, why
    check = decode_text(data, encoding, max_bytes)
    return (check.text, "") if not check.reason else (None, check.reason)
