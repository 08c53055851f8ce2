"""Where ingest finds its samples: a folder of `<class>/<files>` or a CSV of `path,label[,split]` (for text also
`text,label[,split][,group]`, the text inline), listed without reading any file.

What is looked for follows the backbone's modality (a `tasks.core.modality_api.Modality`, handed in by the caller);
data of another registered modality is a one-line error naming both, not a folder of rejected files.

What cannot be read safely is decided here by name, before anything is read: a class name that cannot travel (see
`tasks.dataset.names`) is a one-line error; a file name that is not UTF-8, a path with a NUL byte or into /dev, /proc
or /sys (a CSV row naming /dev/stdin, say), and a link out of the source folder are rejected with a reason. The source
itself must be a folder or a regular CSV file within `MAX_CSV_BYTES` (`ingest.source=/dev/zero` is a one-line error).
"""

from __future__ import annotations

import stat as stat_module
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.core.errors import UserError
from tasks.core.modality_api import Modality
from tasks.core.params import IngestParams
from tasks.dataset.manifest import SPLITS
from tasks.dataset.names import check_class_names, is_utf8, shown, utf8_or_escaped
from tasks.dataset.regular_files import kind, open_regular, special_path

if TYPE_CHECKING:
    import pandas as pd

MAX_CSV_BYTES = 2**30  # a CSV source larger than this (1 GiB) is refused before it is read


@dataclass
class Candidate:
    """One file ingest may use: where it is, its label, and what inspecting it found."""

    path: Path  # absolute
    rel: str  # as stored in the manifest (relative to the project root when possible)
    label: str
    split: str | None = None  # explicit split from a CSV
    text: str | None = None  # text: inline from a CSV, then the normalised text (see tasks.dataset.texts)
    group: str | None = None  # explicit split group from a CSV
    sha256: str = ""
    width: int = 0
    height: int = 0
    reason: str = ""


def _rel(path: Path, root: Path) -> str:
    try:
        rel = path.resolve().relative_to(root).as_posix()
    except ValueError:
        rel = path.resolve().as_posix()
    return utf8_or_escaped(rel)  # storable in the manifest and rejected.csv; a not-UTF-8 name is rejected anyway


@dataclass
class Listing:
    """What a source holds, before any file is read."""

    candidates: list[Candidate]  # files ingest will inspect
    rejected: list[Candidate]  # files rejected by their name alone
    empty_classes: list[str] = field(default_factory=list)  # class folders with no file at all


def extensions(p: IngestParams, modality: Modality) -> set[str]:
    """The file extensions a folder source is read for: `ingest.extensions`, else the modality's."""
    return {e.lower() for e in (p.extensions or modality.default_extensions)}


def _wrong_modality(source: Path, files: list[Path], modality: Modality, others: Sequence[Modality]) -> str | None:
    """Why `files` look like another modality's data (None when they do not)."""
    if not files or any(f.suffix.lower() in modality.default_extensions for f in files):
        return None
    for other in others:
        theirs = [f for f in files if f.suffix.lower() in other.default_extensions]
        if len(theirs) * 2 > len(files):
            return f"{source} holds {other.name} files ({theirs[0].suffix}) and no {modality.name} files"
    return None


def _reject_by_name(f: Path, d: Path, inside: Path, root: Path, exts: set[str]) -> Candidate:
    """A candidate for file `f` of class folder `d`, with a reason when its name alone rules it out."""
    c = Candidate(f, _rel(f, root), d.name)
    link = _rel(f.parent, root) + "/" + utf8_or_escaped(f.name)  # a link itself, not where it points
    if not f.resolve().is_relative_to(inside):
        c.rel, c.reason = link, f"a link out of the source folder (to {utf8_or_escaped(str(f.resolve()))}): not followed"
    elif f.is_dir():
        c.rel, c.reason = link, f"a link to a folder (to {utf8_or_escaped(str(f.resolve()))}): not followed"
    elif not is_utf8(str(f.relative_to(d))):
        c.reason = "the file name is not valid UTF-8 (shown with \\xNN for its bytes): rename it"
    elif f.suffix.lower() not in exts:
        c.reason = f"unsupported extension '{shown(f.suffix)}' (ingest.extensions)"
    return c


def _list_folder(source: Path, p: IngestParams, root: Path, modality: Modality, backbone: str,
                 others: Sequence[Modality]) -> Listing:
    exts = extensions(p, modality)
    candidates, rejected, empty = [], [], []
    class_dirs = sorted(d for d in source.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise UserError(f"{source}: no class folders found; expected {source}/<class>/<image files>")
    check_class_names((d.name, f"folder {shown(str(d))}") for d in class_dirs)
    for f in sorted(x for x in source.iterdir() if x.is_file() and not x.name.startswith(".")):
        rejected.append(Candidate(f, _rel(f, root), "", reason="not inside a class folder"))
    inside = source.resolve()
    for d in class_dirs:
        if not d.resolve().is_relative_to(inside):  # a linked class folder: not walked (it could lead anywhere)
            rejected.append(Candidate(d, _rel(d.parent, root) + "/" + d.name, d.name,
                                      reason=f"a class folder linked out of the source folder (to {d.resolve()}): "
                                             f"not followed; copy the files in instead"))
            continue
        files = sorted(f for f in d.rglob("*") if (f.is_symlink() or not f.is_dir())
                       and not any(s.startswith(".") for s in f.relative_to(d).parts))
        if not files:
            empty.append(d.name)
        for f in files:
            c = _reject_by_name(f, d, inside, root, exts)
            (rejected if c.reason else candidates).append(c)
    if p.extensions is None and not candidates:
        wrong = _wrong_modality(source, [c.path for c in rejected], modality, others)
        if wrong:
            raise UserError(f"ingest.source: {wrong}; {modality.backbone_hint(backbone)}")
    return Listing(candidates, rejected, empty)


def _read_csv(source: Path, encoding: str) -> pd.DataFrame:
    """The CSV source as strings, opened once, checked as a regular file within `MAX_CSV_BYTES` and read from that descriptor."""
    fd, _, why = open_regular(source, MAX_CSV_BYTES, "MAX_CSV_BYTES in tasks/dataset/sources.py")
    if fd is None:
        raise UserError(f"ingest.source: {source}: {why}; give a folder or a CSV file")
    import pandas as pd

    with open(fd, "rb") as f:
        return pd.read_csv(f, dtype=str, keep_default_na=False, encoding=encoding)


def _csv_row(path_text: str, label: str, split: str | None, group: str | None, source: Path,
             root: Path) -> Candidate:
    """The candidate of one CSV row naming a file, rejected by its name (NUL byte, /dev, /proc, /sys) where that
    rules it out, and then shown as the CSV wrote it."""
    why = special_path(Path(path_text))
    path = Path(path_text.replace("\x00", "\\x00"))
    if not path.is_absolute():
        path = source.parent / path
    if why:
        return Candidate(path, shown(path_text), label, split=split, group=group, reason=why)
    return Candidate(path, _rel(path, root), label, split=split, group=group)


def _list_csv(source: Path, root: Path, p: IngestParams, modality: Modality, backbone: str,
              others: Sequence[Modality]) -> tuple[list[Candidate], list[Candidate]]:
    try:
        encoding = modality.csv_encoding(p)
        # a spreadsheet's "CSV UTF-8" starts with a byte-order mark, which would otherwise prefix the first column name
        encoding = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
        df = _read_csv(source, encoding)
    except UserError:
        raise
    except Exception as exc:  # pandas raises many types for malformed CSVs
        hint = "; set ingest.text_encoding to the CSV's encoding (e.g. cp1252)" \
            if isinstance(exc, UnicodeDecodeError) and modality.reads_inline_text else ""
        raise UserError(f"{source}: cannot read as CSV ({str(exc).splitlines()[0]}){hint}") from None
    inline = "text" in df.columns
    if inline and not modality.reads_inline_text:
        raise UserError(f"ingest.source: {source} has a 'text' column (text data); {modality.backbone_hint(backbone)}")
    what = "path" if not inline else "text"
    missing = {what, "label"} - set(df.columns)
    if missing:
        expected = "path,label[,split]" + (" or text,label[,split][,group]" if modality.reads_inline_text else "")
        raise UserError(f"{source}: missing column(s) {sorted(missing)}; expected {expected}")
    src_rel = _rel(source, root)
    out, rejected = [], []
    check_class_names((label, f"{source}:{i}") for i, label in enumerate(df["label"], start=2) if label)
    for i, row in enumerate(df.itertuples(index=False), start=2):
        if not row.label:
            raise UserError(f"{source}:{i}: empty label for {what} {getattr(row, what)[:40]!r}")
        split = getattr(row, "split", "") or None
        if split is not None and split not in SPLITS:
            raise UserError(f"{source}:{i}: split '{split}' is not one of {', '.join(SPLITS)}")
        group = getattr(row, "group", "") or None
        if inline:  # the row is the sample: its locator is the CSV line, it has no file
            out.append(Candidate(source, f"{src_rel}#L{i}", row.label, split=split, text=row.text, group=group))
            continue
        c = _csv_row(row.path, row.label, split, group, source, root)
        (rejected if c.reason else out).append(c)
    if not inline:
        wrong = _wrong_modality(source, [c.path for c in out + rejected], modality, others)
        if wrong:
            raise UserError(f"ingest.source: {wrong.replace(str(source) + ' holds', str(source) + ' lists')}; "
                            f"{modality.backbone_hint(backbone)}")
    return out, rejected


def resolve_source(p: IngestParams, root: Path) -> Path:
    """`ingest.source` as an absolute path (relative ones are under `root`): a folder, or a regular file within
    `MAX_CSV_BYTES` (a CSV); anything else (missing, a device such as /dev/zero, a FIFO, /dev/stdin, a /proc file, a
    path with a NUL byte) is a one-line error, before any of it is read."""
    if "\x00" in p.source:
        raise UserError(f"ingest.source: '{shown(p.source)}' holds a NUL byte; give a folder or a CSV file")
    source = Path(p.source)
    if not source.is_absolute():
        source = root / source
    if not source.exists():
        raise UserError(f"ingest.source: '{p.source}' does not exist (put images in <source>/<class>/ or give a CSV)")
    if source.is_dir():
        return source
    why = special_path(source)
    if why:
        raise UserError(f"ingest.source: '{p.source}' is {why}; give a folder or a CSV file")
    st = source.stat()
    if not stat_module.S_ISREG(st.st_mode):
        raise UserError(f"ingest.source: '{p.source}' is {kind(st.st_mode)}, not a folder or a CSV file")
    if st.st_size > MAX_CSV_BYTES:
        raise UserError(f"ingest.source: '{p.source}' is {st.st_size:,} bytes, over the {MAX_CSV_BYTES:,} a CSV source "
                        f"may hold; split it, or put the files in <source>/<class>/ folders")
    return source


def list_candidates(source: Path, p: IngestParams, root: Path, modality: Modality, backbone: str = "",
                    others: Sequence[Modality] = ()) -> Listing:
    """The samples of a folder or CSV source for a backbone of `modality`, listed without reading any file; data
    that looks like one of the `others` modalities' is a one-line error."""
    if source.is_dir():
        return _list_folder(source, p, root, modality, backbone, others)
    return Listing(*_list_csv(source, root, p, modality, backbone, others))


def list_sources(p: IngestParams, root: Path, modality: Modality, backbone: str = "",
                 others: Sequence[Modality] = ()) -> Listing:
    """The samples under `ingest.source`, listed without reading them."""
    return list_candidates(resolve_source(p, root), p, root, modality, backbone, others)
