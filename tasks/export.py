"""Stage `export`: backbone + head as one ONNX graph, gated by parity on real held-out samples.

The graph takes raw samples as the modality defines them (`tasks.modality`): `images`, uint8 RGB NHWC
(batch, S, S, 3) resized on the client (`tasks.dataset.images.load_uint8` is the reference), or `texts`, UTF-8
strings with the tokenizer inside the graph (running it needs the onnxruntime-extensions op library registered with
the session); it returns `logits` and `probs` (batch, classes). The batch axis is dynamic. Class names, the input
contract (`tasks.modality.input_contract.InputContract`) and provenance are stored in the model's metadata_props;
`models/labels.txt` lists classes one per line (Triton's label file format).

How the graph is made depends on what ships:
- **a frozen backbone** (no fine-tuning kept): the feature store's backbone graph, checked against torch when it was
  made, composed with the head's layers using `onnx` alone (`tasks.model.head_graph`); no torch is imported. Its
  gate compares it with that backbone graph followed by the head in numpy;
- **a fine-tuned backbone**: exported from torch, gated against torch eager.
Either way the file is written to a staging path, checked (onnx.checker, then the parity gate on up to
`export.parity_images` held-out images at batch 1, 7, 32 and the rest: max |dp| <= export.parity_tolerance and
identical argmax), and only then renamed into place. A failed gate leaves the previous model untouched.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from tasks.core.disk_space import disk_full, is_disk_full
from tasks.core.errors import UserError
from tasks.core.files import atomic_write_text, sha256_file
from tasks.core.modality_api import Modality
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths, default_paths
from tasks.core.progress import log
from tasks.core.stage_cli import run_stage_cli
from tasks.evaluation.cached_scoring import why_rows_differ
from tasks.evaluation.parity import ParityReport, Probs, backbone_graph_then_head, compare_with_outputs, torch_probs
from tasks.extraction.backbone_graph import ensure_backbone_graph
from tasks.extraction.feature_store import open_store
from tasks.extraction.fingerprint import feature_recipe
from tasks.modality.registry import modality_for
from tasks.modality.samples import parity_samples_and_rows, split_samples
from tasks.modality.shipped_model import shipped_state
from tasks.model.finetune_record import finetune_summary
from tasks.model.head_format import Head
from tasks.model.head_graph import compose_classifier


class ExportParityError(UserError):
    """The exported graph does not reproduce the torch model within tolerance."""


@dataclass
class ExportSummary:
    """Where the model went and how it checked out."""

    onnx: str
    labels: str
    size_mb: float
    parity: ParityReport
    seconds: float


def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def model_metadata(params: Params, head: Head, paths: ProjectPaths, modality: Modality) -> dict[str, str]:
    """metadata_props written into the ONNX model (all values are strings, JSON where structured)."""
    head_file = paths.models / "head.json"  # validation metrics of the head (test metrics come after, in evaluate)
    head_info = json.loads(head_file.read_text()) if head_file.exists() else {}
    metrics = {k: head_info[k] for k in ("train_accuracy", "val_accuracy", "n_train") if head_info.get(k) is not None}
    tuned = finetune_summary(paths)
    if tuned.get("kept") == "finetuned":
        metrics["val_accuracy"] = tuned["best"]["val_accuracy"]
    p = params.backbone
    return {
        "headstart.classes": json.dumps(head.classes),
        "headstart.input": modality.input_contract(params, head.classes).metadata_json(),
        "headstart.outputs": json.dumps({"logits": "raw scores (batch, classes)", "probs": "softmax of logits"}),
        "headstart.backbone": json.dumps(feature_recipe(p, params.seed)),
        "headstart.fingerprint": head.fingerprint,
        "headstart.head": json.dumps({"kind": head.kind, "finetune": {k: tuned[k] for k in ("strategy", "kept",
                                      "best_epoch") if k in tuned}}),
        "headstart.params_sha256": hashlib.sha256(json.dumps(params.model_dump(mode="json"), sort_keys=True)
                                                  .encode()).hexdigest(),
        "headstart.git_commit": _git_commit(paths.root),
        "headstart.metrics": json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float))}),
        "headstart.opset": str(params.export.opset),
        "headstart.created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _int8_variant(params: Params, paths: ProjectPaths, classes: list[str], modality: Modality) -> dict:
    """Build models/int8/model.onnx if enabled, accurate enough and faster on this CPU (`tasks.runtime.int8`);
    always write models/int8/report.json."""
    p = params.export
    out_dir = paths.models / "int8"
    out_dir.mkdir(parents=True, exist_ok=True)
    blocker = modality.int8_blocker()
    if not p.int8 or blocker:
        (out_dir / "model.onnx").unlink(missing_ok=True)
        report = {"enabled": False, "reason": "export.int8 is false" if not p.int8 else blocker}
        if p.int8:
            log(f"export: int8 skipped: {report['reason']}")
    else:
        from tasks.runtime.int8 import IMAGE_RECIPE, TEXT_RECIPE, build_int8, quantize_dynamic_int8, quantize_int8

        val_x, val_y = split_samples(params, paths, "val", 10_000)
        if not len(val_y):
            val_x, val_y = split_samples(params, paths, "test", 10_000)
        if not modality.int8_calibrated:
            quantize, recipe, calibrated = quantize_dynamic_int8, TEXT_RECIPE, 0
        else:
            calib, _ = split_samples(params, paths, "train", p.int8_calibration_images)
            quantize, recipe, calibrated = (lambda src, dst: quantize_int8(src, dst, calib)), IMAGE_RECIPE, len(calib)
        r = build_int8(paths.onnx, out_dir / "model.onnx", quantize, val_x, val_y, classes, p.int8_max_accuracy_drop,
                       p.int8_min_speedup, calibration_images=calibrated, recipe=recipe, threads=params.features.threads)
        report = {"enabled": True} | asdict(r)
        log(f"export: int8 {'accepted' if r.accepted else 'not shipped'}: accuracy {r.fp32_accuracy:.3f} -> "
            f"{r.int8_accuracy:.3f} on {r.eval_images} val {modality.noun}, {r.fp32_mb:.1f} -> {r.int8_mb:.1f} MB, "
            f"{r.speedup:.2f}x fp32 at batch 32 ({r.reason})")
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2))
    return report


def in_order(probs: np.ndarray) -> Probs:
    """A reference that answers consecutive chunks of the samples with the matching consecutive rows of `probs`
    (`compare` runs the samples in order, in `parity_chunks`)."""
    at = [0]

    def reference(chunk: np.ndarray) -> np.ndarray:
        out = probs[at[0]:at[0] + len(chunk)]
        at[0] += len(chunk)
        return out

    return reference


def _frozen_graph(params: Params, paths: ProjectPaths, head: Head, samples: np.ndarray, rows) -> tuple[onnx.ModelProto, dict, tuple[Probs, str]]:
    """The store's checked backbone graph + the head, composed with onnx; its metadata; its parity reference."""
    store = open_store(params, paths)
    head.require_features(store.fingerprint, paths.head)
    record = ensure_backbone_graph(params, store, lambda: samples)
    backbone = store.graph
    proto = compose_classifier(onnx.load(str(backbone)), head)
    # what lets evaluate prove that this graph's backbone computed the cached features (tasks.evaluation.cached_scoring)
    meta = {"headstart.backbone_graph": json.dumps({
        "sha256": record["sha256"], "fingerprint": store.fingerprint,
        "vs_torch": {k: record[k] for k in ("images", "max_abs_diff", "tolerance", "torch", "onnxruntime")}})}
    keys = rows["sha256"].tolist()
    if why_rows_differ(store, keys, record["sha256"], modality_for(params.backbone)) == "":
        # the rows are what this very graph computed from these files: the head on them is the reference, and the
        # backbone need not run a second time (a head change then costs one run of the candidate, not two)
        reference = in_order(head.probs(store.get(keys)))
        return proto, meta, (reference, "the head in numpy on the rows the store's backbone graph computed from "
                                        "these samples")
    reference = backbone_graph_then_head(backbone, head, params.features.threads)
    return proto, meta, (reference, "the store's backbone graph + the head in numpy")


def _torch_graph(params: Params, modality: Modality, head: Head, state: dict,
                 staging: Path) -> tuple[onnx.ModelProto, dict, tuple[Probs, str]]:
    """The fine-tuned model exported from torch; its parity reference is torch eager."""
    from tasks.modality.shipped_model import build_classifier

    model = build_classifier(params, head, state)
    modality.export_graph(model, staging, params, ["logits", "probs"])
    return onnx.load(str(staging)), {}, (torch_probs(params, model), "torch eager")


def _write_candidate(params: Params, paths: ProjectPaths, head: Head, staging: Path,
                     modality: Modality) -> tuple[ParityReport, dict]:
    """Build the graph for what ships into `staging`, with metadata, checked by onnx and by its parity gate; the
    gate's report and the candidate's own probabilities on the parity samples (keys: their sha256)."""
    samples, rows = parity_samples_and_rows(params, paths)
    state = shipped_state(paths)
    if state is None:
        proto, meta, (reference, what) = _frozen_graph(params, paths, head, samples, rows)
    else:
        proto, meta, (reference, what) = _torch_graph(params, modality, head, state, staging)
    for key, value in (model_metadata(params, head, paths, modality) | meta).items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "headstart"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(staging))
    report, probs = compare_with_outputs(staging, reference, samples, params.export.parity_tolerance, what)
    return report, {"keys": rows["sha256"].tolist(), "probs": probs.tolist()}


def run_export(params: Params, paths: ProjectPaths | None = None) -> ExportSummary:
    """Export backbone + head to `models/model.onnx` (+ labels.txt, optional int8 variant): the candidate, only if
    the parity gate passes; otherwise the previous model stays in place."""
    paths = paths or default_paths()
    t0 = time.perf_counter()
    head = Head.load(paths.head)
    modality = modality_for(params.backbone)
    staging = paths.onnx.with_name(f".{paths.onnx.name}.staging.onnx")
    try:
        report, outputs = _write_candidate(params, paths, head, staging, modality)
        if not report.passed:
            raise ExportParityError(
                f"export parity gate failed on {report.images} samples: max |p_onnx - p_reference| = "
                f"{report.max_abs_diff_probs:.2e} (tolerance {report.tolerance:.0e}, reference: {report.reference}), "
                f"argmax agree: {report.argmax_agree}; {paths.onnx} was not replaced")
        os.replace(staging, paths.onnx)
    except OSError as exc:  # the staging file is written by onnx/torch, not through atomic_path: name the model
        if not is_disk_full(exc, staging.parent):
            raise
        written = staging.stat().st_size if staging.exists() else 0
        staging.unlink(missing_ok=True)  # before the free space is measured for the message
        raise disk_full(paths.onnx, exc, written) from None
    finally:
        staging.unlink(missing_ok=True)
    # the shipped bytes' outputs from the sample files: evaluate's end-to-end check reads them instead of running the
    # whole graph on the same files again (tasks.evaluation.cached_scoring)
    atomic_write_text(paths.metrics / "export_parity.json",
                      json.dumps({"model_sha256": sha256_file(paths.onnx)} | outputs))
    atomic_write_text(paths.labels, "\n".join(head.classes) + "\n")
    int8 = _int8_variant(params, paths, head.classes, modality)
    size_mb = paths.onnx.stat().st_size / 1e6
    summary = ExportSummary(str(paths.onnx), str(paths.labels), size_mb, report, time.perf_counter() - t0)
    record = asdict(summary) | {"onnx": paths.onnx.relative_to(paths.root).as_posix(),
                                "labels": paths.labels.relative_to(paths.root).as_posix(),
                                "opset": params.export.opset, "int8_accepted": bool(int8.get("accepted", False))}
    atomic_write_text(paths.metrics / "export.json", json.dumps(record, indent=2))
    takes = f"{modality.noun}, {modality.input_extent(params.backbone)}"
    log(f"export: {paths.onnx.relative_to(paths.root)} ({size_mb:.1f} MB, {len(head.classes)} classes, input "
        f"{takes}), a candidate; parity with {report.reference} on "
        f"{report.images} samples at batch {report.batch_sizes}: max |dp| {report.max_abs_diff_probs:.1e}, "
        f"argmax agree {report.argmax_agree}; {summary.seconds:.1f}s")
    return summary


def main(argv: list[str] | None = None) -> None:
    run_stage_cli(run_export, __name__, argv)


if __name__ == "__main__":
    main()
