"""Parity gates: a candidate ONNX classifier against a reference computation on the same real samples.

The reference is torch eager for a graph torch exported (a fine-tuned backbone). For a graph composed with `onnx` (a
frozen backbone) it is the head in numpy (float64) on the cached rows of the samples when their provenance proves the
store's backbone graph computed them (tasks.export), else that graph run again followed by the head: the backbone
graph itself was compared with torch when it was made (`tasks.extraction.backbone_graph`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.core.params import Params
from tasks.dataset.manifest_samples import parity_chunks
from tasks.model.head_format import Head


@dataclass
class ParityReport:
    """The candidate against its reference on real held-out samples."""

    images: int  # how many samples (the name is the stored report's: export.json, the model card)
    batch_sizes: list[int]
    max_abs_diff_probs: float
    argmax_agree: bool
    tolerance: float
    reference: str

    @property
    def passed(self) -> bool:
        return self.max_abs_diff_probs <= self.tolerance and self.argmax_agree


Probs = Callable[[np.ndarray], np.ndarray]


def compare(candidate: Path, reference: Probs, samples: np.ndarray, tolerance: float, what: str) -> ParityReport:
    """Run the candidate graph (ONNX Runtime) and `reference` on `samples` in `parity_chunks`; compare probabilities
    and argmax."""
    return compare_with_outputs(candidate, reference, samples, tolerance, what)[0]


def compare_with_outputs(candidate: Path, reference: Probs, samples: np.ndarray, tolerance: float,
                         what: str) -> tuple[ParityReport, np.ndarray]:
    """`compare`, and the candidate's probabilities for `samples` in their order."""
    from tasks.extraction.engines import OrtEngine

    session = OrtEngine(candidate, threads=0).session
    name = session.get_inputs()[0].name
    sizes, worst, agree, outputs = [], 0.0, True, []
    for chunk in parity_chunks(samples):
        sizes.append(len(chunk))
        got = session.run(["probs"], {name: chunk})[0]
        outputs.append(got)
        expected = reference(chunk)
        worst = max(worst, float(np.abs(got - expected).max()))
        agree &= bool((got.argmax(1) == expected.argmax(1)).all())
    probs = np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)
    return ParityReport(sum(sizes), sizes, worst, agree, tolerance, what), probs


def torch_probs(params: Params, model) -> Probs:
    """Probabilities of a torch classifier (raw samples -> (logits, probs)), eager, inference mode; texts through
    the Hugging Face tokenizer."""
    from tasks.modality.registry import modality_for
    from tasks.modality.torch_runner import torch_runner

    run = torch_runner(modality_for(params.backbone), params, model)
    return lambda samples: run(samples)[1].numpy()


def backbone_graph_then_head(backbone_graph: Path, head: Head, threads: int) -> Probs:
    """Probabilities of the backbone graph (ONNX Runtime) followed by `head` in numpy."""
    from tasks.extraction.engines import OrtEngine

    engine = OrtEngine(backbone_graph, threads)
    return lambda images: head.probs(engine.run(images))
