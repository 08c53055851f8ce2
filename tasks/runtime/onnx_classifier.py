"""The shipped model as a server runs it: an ONNX classifier over raw samples (uint8 images, or texts), read with its
own metadata.

Used by `evaluate` (score the artifact that ships), `predict` (files -> top-k) and the int8 check in `export`.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from tasks.core.errors import UserError
from tasks.core.hardware import add_extension_ops, ort_providers, resolve_threads
from tasks.core.params import DEFAULT_MAX_PIXELS
from tasks.dataset.texts import DEFAULT_MAX_TEXT_BYTES, check_decoded
from tasks.modality.registry import contract_from_metadata, modality_named


@dataclass
class Prediction:
    """One input's outcome: probabilities, or the reason it could not be scored."""

    path: str
    probs: np.ndarray | None
    error: str = ""


def open_session(path: Path, threads: int = 0):
    """An ONNX Runtime session on `path` (CUDA provider when a GPU is present, `threads` intra-op threads, 0 = all
    cores, quiet logs); a one-line UserError when the file is missing or not a loadable graph."""
    import onnxruntime as ort

    if not path.is_file():
        raise UserError(f"model '{path}' not found; run the export stage first (python -m tasks.export)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = resolve_threads(threads)
    opts.log_severity_level = 3
    add_extension_ops(opts)
    try:
        return ort.InferenceSession(str(path), opts, providers=ort_providers())
    except Exception as exc:  # ORT raises its own exception types for unreadable graphs
        raise UserError(f"model '{path}' is not a loadable ONNX model ({str(exc).splitlines()[0][:120]})") from None


class OnnxClassifier:
    """An exported headstart model loaded in ONNX Runtime (CUDA provider when a GPU is present, else CPU)."""

    def __init__(self, path: str | Path, threads: int = 0):
        self.path = Path(path)
        self.session = open_session(self.path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        if "headstart.classes" not in meta:
            raise UserError(f"model '{self.path}' has no headstart metadata (headstart.classes); was it exported by "
                            f"headstart?")
        self.metadata = meta
        self.classes: list[str] = json.loads(meta["headstart.classes"])
        self.contract = contract_from_metadata(meta, self.classes)
        self.modality = modality_named(self.contract.modality)
        self.input_name: str = self.contract.name
        self.input_size: int = int(self.contract.field("size", [0])[0])
        self.resize: str = self.contract.field("resize", "pad")
        self.max_length: int = int(self.contract.field("max_length", 0))

    def load_rows(self, rows, paths, max_pixels: int, hashes=None) -> np.ndarray:
        """Manifest `rows` as this model takes them (its own input size and resize mode)."""
        return self.modality.load_rows(rows, paths, self.input_size, self.resize, max_pixels, hashes)

    def probs(self, samples: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch of raw samples: uint8 NHWC at the model's input size, or texts."""
        feed = samples if samples.dtype == object else np.ascontiguousarray(samples)
        return self.session.run(["probs"], {self.input_name: feed})[0]

    def probs_batched(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Class probabilities for any number of images, run `batch_size` at a time."""
        if not len(images):
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return np.concatenate([self.probs(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])

    def predict_paths(self, paths: Iterable[str | Path], batch_size: int = 32, workers: int = 1,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Prediction]:
        """Predictions in input order; unreadable or oversized files yield a Prediction with `error`, never raise.
        An item may be a (name, text) pair: a text given inline."""

        def decode(p) -> tuple[str, np.ndarray | str | None, str]:
            if isinstance(p, tuple):  # (name, text) given inline, e.g. a CSV's text column
                check = check_decoded(p[1], DEFAULT_MAX_TEXT_BYTES)
                return p[0], (check.text or None), check.reason
            sample, reason = self.modality.read_input(Path(p), self.input_size, self.resize, max_pixels)
            return str(p), sample, reason

        def stack(items):
            return np.stack(items) if isinstance(items[0], np.ndarray) else np.array(items, dtype=object)

        def flush(batch):
            good = [b for b in batch if b[1] is not None]
            probs = self.probs(stack([b[1] for b in good])) if good else []
            it = iter(probs)
            return [Prediction(p, next(it) if arr is not None else None, err) for p, arr, err in batch]

        batch: list = []
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for item in pool.map(decode, paths):
                batch.append(item)
                if len(batch) >= batch_size:
                    yield from flush(batch)
                    batch = []
            if batch:
                yield from flush(batch)
