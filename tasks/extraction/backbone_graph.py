"""The feature store's backbone graph: raw samples (uint8 NHWC images, or strings) -> features, exported from torch
once per fingerprint and gated by parity with torch on real held-out samples before anything uses it.

The modality adds its own checks (`Modality.check_graph`): for text the graph holds the tokenizer
(`tasks.model.tokenizer_graph`), and the in-graph token ids must equal the Hugging Face tokenizer's on every sample,
alone and batched; features are compared with torch run on Hugging Face's ids.

`<store>/backbone.onnx` is what the ONNX Runtime engine extracts with, what Dask workers load, and, for a frozen
backbone, the first part of the exported classifier (export composes it with the head using `onnx` alone). It is
renamed into place only after passing its gate; `<store>/backbone.parity.json` records the check together with the
graph's sha256, so a reader can tell that the graph it holds is the one that was checked.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tasks.core.errors import UserError
from tasks.core.files import atomic_write_text, sha256_file
from tasks.core.params import Params
from tasks.core.progress import log
from tasks.dataset.manifest_samples import parity_chunks
from tasks.extraction.feature_store import FeatureStore
from tasks.modality.registry import modality_for
from tasks.modality.torch_runner import torch_runner


def backbone_model(params: Params):
    """The params' backbone as a torch model without a head (raw samples' tensor -> features)."""
    return modality_for(params.backbone).build_model(params)[0]


def _compare(params: Params, model, graph: Path, samples: np.ndarray,
             threads: int) -> tuple[float, float, list[int]]:
    """max |f_onnx - f_torch| and max |f_torch| over `samples`, and the batch sizes they ran at (`parity_chunks`)."""
    from tasks.extraction.engines import OrtEngine

    engine = OrtEngine(graph, threads)
    reference = torch_runner(modality_for(params.backbone), params, model)
    worst, scale, sizes = 0.0, 0.0, []
    for chunk in parity_chunks(samples):
        sizes.append(len(chunk))
        expected = reference(chunk).numpy()
        worst = max(worst, float(np.abs(engine.run(chunk) - expected).max()))
        scale = max(scale, float(np.abs(expected).max()))
    return worst, scale, sizes


def ensure_backbone_graph(params: Params, store: FeatureStore, sample: Callable[[], np.ndarray] | None) -> dict:
    """The store's backbone graph, checked: returns its parity record. The first time (no graph, or a graph without
    a record matching its bytes) the graph is exported from torch (unless present) and compared with torch on
    `sample()` real held-out samples; it must agree within `export.parity_tolerance` relative to the largest feature, or a
    one-line UserError says by how much and nothing is kept."""
    record = store.graph_record()
    if record is not None:
        return record
    if sample is None:
        raise UserError(f"{store.graph} has not been checked against torch yet; run the features stage on "
                        f"this machine first (it makes and checks the graph)")
    import onnxruntime
    import torch

    graph = store.graph
    checking = graph if graph.exists() else graph.with_name(f".{graph.name}.staging.onnx")
    model = backbone_model(params).eval()
    try:
        if checking != graph:
            modality_for(params.backbone).export_graph(model, checking, params, ["features"])
        samples = sample()
        modality_for(params.backbone).check_graph(params, checking, samples)
        worst, scale, sizes = _compare(params, model, checking, samples, params.features.threads)
        tolerance = params.export.parity_tolerance * max(1.0, scale)
        if not worst <= tolerance:
            raise UserError(f"{graph}: the backbone graph disagrees with torch on {len(samples)} held-out samples "
                            f"(max |f_onnx - f_torch| = {worst:.2e} > {tolerance:.1e} = export.parity_tolerance x "
                            f"max |f|); "
                            + (f"its cached features are suspect: delete {store.dir} and re-run the features stage"
                               if checking == graph else "try another export.opset, or another backbone"))
        if checking != graph:
            checking.replace(graph)
    finally:
        if checking != graph:
            checking.unlink(missing_ok=True)
    record = {"sha256": sha256_file(graph), "images": int(len(samples)), "batch_sizes": sizes,
              "max_abs_diff": worst, "max_abs_feature": scale, "tolerance": tolerance,
              "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "opset": params.export.opset,
              "checked_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    atomic_write_text(store.graph_record_path, json.dumps(record, indent=2))
    log(f"backbone graph: checked against torch on {len(samples)} held-out samples at batch {sizes}: "
        f"max |df| {worst:.1e} (features up to {scale:.1f}) -> {graph.name}")
    return record
