"""`headstart predict`: run the exported ONNX model on files, folders or a CSV of paths (or, for a text model, of
texts); write top-k as CSV or JSON.

Inputs are decoded and resized exactly as in training (the model's metadata says how); text files are decoded and
normalised by ingest's rule and tokenized inside the graph, so neither torch nor transformers is imported. A file that cannot be read
gets a row with its error instead of stopping the run. ONNX Runtime uses CUDA when a GPU is present.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.core.errors import UserError
from tasks.core.files import atomic_write_text
from tasks.core.modality_api import Modality
from tasks.core.progress import Progress, log
from tasks.runtime.onnx_classifier import OnnxClassifier


def collect_inputs(items: list[str], modality: Modality) -> list[Path | tuple[str, str]]:
    """Expand files, folders (recursively, the modality's extensions) and CSVs (a `path` column; for text also a
    `text` column, each row's text inline, named `<csv>#L<line>`) into a list of inputs."""
    extensions = modality.default_extensions
    out: list[Path | tuple[str, str]] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in extensions
                          and not any(part.startswith(".") for part in f.relative_to(p).parts))
        elif p.suffix.lower() == ".csv" and p.is_file():
            df = pd.read_csv(p, dtype=str, keep_default_na=False)
            if modality.reads_inline_text and "text" in df.columns:
                out += [(f"{p}#L{i}", t) for i, t in enumerate(df["text"], start=2)]
                continue
            if "path" not in df.columns:
                raise UserError(f"{p}: a CSV of inputs needs a 'path' column" +
                                (" or a 'text' column" if modality.reads_inline_text else ""))
            out += [Path(x) if Path(x).is_absolute() else p.parent / x for x in df["path"]]
        elif p.exists() or p.suffix:
            out.append(p)  # a missing file is reported on its own row
        else:
            raise UserError(f"'{item}' is neither a file, a folder nor a CSV")
    if not out:
        raise UserError(f"no {modality.noun} found in {', '.join(items)}")
    return out


@dataclass
class PredictSummary:
    """Counts of one predict run."""

    inputs: int
    errors: int
    seconds: float
    output: str


def predict(inputs: list[str], model: str | Path = "models/model.onnx", top_k: int = 3, out: str | None = None,
            batch_size: int = 32) -> PredictSummary:
    """Score every input; write rows (path, top-k labels and probabilities, error) to `out` (.csv or .json) or stdout.

    Guarantees: one row per input, in input order; unreadable files have an empty prediction and an `error`."""
    t0 = time.perf_counter()
    clf = OnnxClassifier(model)
    files = collect_inputs(inputs, clf.modality)
    k = max(1, min(top_k, len(clf.classes)))
    rows = []
    with Progress(len(files), "predict") as bar:
        for pred in clf.predict_paths(files, batch_size=batch_size):
            row: dict = {"path": pred.path}
            if pred.probs is not None:
                order = np.argsort(-pred.probs)[:k]
                for rank, idx in enumerate(order, start=1):
                    row[f"label_{rank}"] = clf.classes[idx]
                    row[f"prob_{rank}"] = round(float(pred.probs[idx]), 6)
            row["error"] = pred.error
            rows.append(row)
            bar.update(1)
    columns = ["path"] + [c for r in range(1, k + 1) for c in (f"label_{r}", f"prob_{r}")] + ["error"]
    if out and out.endswith(".json"):
        text = json.dumps([{c: r.get(c) for c in columns if c in r} for r in rows], indent=2)
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        text = buf.getvalue()
    if out:
        atomic_write_text(Path(out), text)
    else:
        sys.stdout.write(text)
    errors = sum(1 for r in rows if r["error"])
    summary = PredictSummary(len(rows), errors, time.perf_counter() - t0, out or "-")
    log(f"predict: {summary.inputs} inputs, {errors} unreadable, {summary.seconds:.1f}s"
        f"{f' -> {out}' if out else ''}")
    return summary
