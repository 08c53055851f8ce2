"""Names from the data drop: which class names can travel, and how any name is shown in one line.

A class name becomes a line of `labels.txt` (read back by splitting on line ends), an entry of the served model
metadata, a folder name on other machines, and a key in metrics. So a class name must be valid UTF-8 and hold no NUL,
line break or other control character (a class "line\\nbreak" would become two lines of labels.txt and shift every
later class by one at serving), and no two class names may differ only by case or Unicode normalisation (they are one
folder on a case-insensitive filesystem). `check_class_names` rejects the first one that breaks this with one line.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable

from tasks.core.errors import UserError

_BREAKING = ("Cc", "Zl", "Zp")  # control characters (NUL, \n, \r, \t, ...), line and paragraph separators


def utf8_or_escaped(name: str) -> str:
    """`name` as valid UTF-8 text: bytes that are not UTF-8 (a file name from another system, which Python keeps as
    surrogates) are shown as \\xNN. Valid names are returned unchanged."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def shown(name: str) -> str:
    """`name` in one printable line: not-UTF-8 bytes as \\xNN, control characters and line breaks escaped (\\n)."""
    return "".join(ascii(ch)[1:-1] if unicodedata.category(ch) in _BREAKING else ch for ch in utf8_or_escaped(name))


def is_utf8(name: str) -> bool:
    """True when `name` came from valid UTF-8 bytes (no surrogates standing in for undecodable bytes)."""
    return utf8_or_escaped(name) is name


def class_name_problem(name: str) -> str | None:
    """Why `name` cannot be a class name (see the module docstring), or None."""
    if not is_utf8(name):
        return "is not valid UTF-8"
    if "\x00" in name:
        return "holds a NUL byte"
    bad = next((ch for ch in name if unicodedata.category(ch) in _BREAKING), None)
    if bad is not None:
        return f"holds a line break or control character (U+{ord(bad):04X})"
    if name != name.strip():
        return "starts or ends with whitespace"
    return None


def _fold(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


def check_class_names(named: Iterable[tuple[str, str]]) -> None:
    """Raise a one-line UserError for the first class name that cannot travel, or for two that differ only by case
    or normalisation. `named`: (class name, where it comes from, e.g. the folder or `file.csv:12`)."""
    folded: dict[str, tuple[str, str]] = {}
    for name, where in named:
        problem = class_name_problem(name)
        if problem:
            raise UserError(f"class name '{shown(name)}' ({where}) {problem}: it cannot be a line of labels.txt or "
                            f"a served class name; rename it (letters, digits, spaces, - and _ travel safely)")
        first = folded.setdefault(_fold(name), (name, where))
        if first[0] != name:
            raise UserError(f"class names '{shown(first[0])}' ({first[1]}) and '{shown(name)}' ({where}) differ only "
                            f"by case or accents' encoding: they are one folder on a case-insensitive filesystem; "
                            f"merge or rename one")
