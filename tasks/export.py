"""Stage `export`: backbone + head as one ONNX graph, gated by parity with torch on real held-out images.

The graph takes `images`: uint8 RGB, NHWC, (batch, S, S, 3) at the backbone's input size S (resize on the client:
`tasks.images.load_uint8` is the reference), and returns `logits` and `probs` (batch, classes). NHWC uint8 is what
image decoders produce, a quarter of the bytes of float32 on the wire, and keeps normalisation inside the graph
so no client can get it wrong. The batch axis is dynamic. Class names, input contract and provenance are stored in
the model's metadata_props; `models/labels.txt` lists classes one per line (Triton's label file format).

The ONNX file is written to a staging path, checked (onnx.checker, then ONNX Runtime vs torch eager on up to
`export.parity_images` val images at batch 1, 7, 32 and the rest: max |p_onnx - p_torch| <= export.parity_tolerance and
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
import torch

from tasks.core.errors import UserError
from tasks.core.files import atomic_write_text
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths, default_paths
from tasks.core.progress import log
from tasks.core.stage_cli import run_stage_cli
from tasks.dataset.manifest import read_manifest, split_rows
from tasks.dataset.manifest_images import load_rows
from tasks.extraction.engines import OrtEngine
from tasks.extraction.fingerprint import feature_recipe
from tasks.model.finetune_record import finetune_summary
from tasks.model.head_format import Head
from tasks.model.image_model import ImageModel
from tasks.model.onnx_export import export_onnx
from tasks.model.shipped_model import shipped_classifier


class ExportParityError(UserError):
    """The exported graph does not reproduce the torch model within tolerance."""


@dataclass
class ParityReport:
    """ONNX Runtime vs torch on real images."""

    images: int
    batch_sizes: list[int]
    max_abs_diff_probs: float
    argmax_agree: bool
    tolerance: float


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


def model_metadata(params: Params, head: Head, paths: ProjectPaths) -> dict[str, str]:
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
        "headstart.input": json.dumps({"name": "images", "dtype": "uint8", "layout": "NHWC", "color": "RGB",
                                       "size": [p.input_size, p.input_size], "resize": p.resize,
                                       "note": "resize on the client; scaling and normalisation are in the graph"}),
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


def parity_images(params: Params, paths: ProjectPaths) -> np.ndarray:
    """Up to `export.parity_images` real held-out images (val, else test, else train) as uint8 NHWC."""
    for split in ("val", "test", "train"):
        images, _ = _split_images(params, paths, split, params.export.parity_images)
        if len(images):
            return images
    return images


def check_parity(model: ImageModel, onnx_path: Path, images: np.ndarray, tolerance: float) -> ParityReport:
    """Run ONNX Runtime and torch eager on the same images at batch 1, 7 and the remainder; compare probabilities."""
    engine = OrtEngine(onnx_path, threads=0)
    sizes, worst, agree, i = [], 0.0, True, 0
    for bs in (1, 7, 32, len(images)):
        chunk = images[i : i + bs]
        if not len(chunk):
            break
        i += len(chunk)
        sizes.append(len(chunk))
        ort_probs = engine.session.run(["probs"], {"images": chunk})[0]
        with torch.inference_mode():
            torch_probs = model(torch.from_numpy(chunk))[1].numpy()
        worst = max(worst, float(np.abs(ort_probs - torch_probs).max()))
        agree &= bool((ort_probs.argmax(1) == torch_probs.argmax(1)).all())
    return ParityReport(i, sizes, worst, agree, tolerance)


def _split_images(params: Params, paths: ProjectPaths, split: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `limit` images of one split (sorted by sha256, so the choice is stable) and their labels."""
    rows = split_rows(read_manifest(paths), split).sort_values("sha256").head(limit)
    size, mode = params.backbone.input_size, params.backbone.resize
    if not len(rows):
        return np.zeros((0, size, size, 3), np.uint8), np.array([], dtype=object)
    return load_rows(rows, paths, size, mode, params.ingest.max_pixels), rows["label"].to_numpy()


def _int8_variant(params: Params, paths: ProjectPaths, classes: list[str]) -> dict:
    """Build models/int8/model.onnx if enabled and accurate enough; always write models/int8/report.json."""
    p = params.export
    out_dir = paths.models / "int8"
    out_dir.mkdir(parents=True, exist_ok=True)
    if not p.int8:
        (out_dir / "model.onnx").unlink(missing_ok=True)
        report = {"enabled": False, "reason": "export.int8 is false"}
    else:
        from tasks.serving.int8 import build_int8

        calib, _ = _split_images(params, paths, "train", p.int8_calibration_images)
        val_x, val_y = _split_images(params, paths, "val", 10_000)
        if not len(val_y):
            val_x, val_y = _split_images(params, paths, "test", 10_000)
        r = build_int8(paths.onnx, out_dir / "model.onnx", calib, val_x, val_y, classes, p.int8_max_accuracy_drop)
        report = {"enabled": True} | asdict(r)
        log(f"export: int8 {'accepted' if r.accepted else 'REJECTED'}: accuracy {r.fp32_accuracy:.3f} -> "
            f"{r.int8_accuracy:.3f} on {r.eval_images} val images, {r.fp32_mb:.1f} -> {r.int8_mb:.1f} MB, "
            f"{r.fp32_img_s:.0f} -> {r.int8_img_s:.0f} img/s ({r.reason})")
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2))
    return report


def run_export(params: Params, paths: ProjectPaths | None = None) -> ExportSummary:
    """Export backbone + head to `models/model.onnx` (+ labels.txt, optional int8 variant): the candidate, only if
    the parity gate passes; otherwise the previous model stays in place."""
    paths = paths or default_paths()
    t0 = time.perf_counter()
    head = Head.load(paths.head)
    model = shipped_classifier(params, paths)
    staging = paths.onnx.with_name(f".{paths.onnx.name}.staging.onnx")
    try:
        export_onnx(model, staging, params.backbone.input_size, ["logits", "probs"], params.export.opset)
        proto = onnx.load(str(staging))
        for key, value in model_metadata(params, head, paths).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "headstart"
        onnx.checker.check_model(proto)
        onnx.save(proto, str(staging))
        report = check_parity(model, staging, parity_images(params, paths), params.export.parity_tolerance)
        if report.max_abs_diff_probs > report.tolerance or not report.argmax_agree:
            raise ExportParityError(
                f"export parity gate failed on {report.images} images: max |p_onnx - p_torch| = "
                f"{report.max_abs_diff_probs:.2e} (tolerance {report.tolerance:.0e}), argmax agree: "
                f"{report.argmax_agree}; {paths.onnx} was not replaced")
        os.replace(staging, paths.onnx)
    finally:
        staging.unlink(missing_ok=True)
    atomic_write_text(paths.labels, "\n".join(head.classes) + "\n")
    int8 = _int8_variant(params, paths, head.classes)
    size_mb = paths.onnx.stat().st_size / 1e6
    summary = ExportSummary(str(paths.onnx), str(paths.labels), size_mb, report, time.perf_counter() - t0)
    record = asdict(summary) | {"onnx": paths.onnx.relative_to(paths.root).as_posix(),
                                "labels": paths.labels.relative_to(paths.root).as_posix(),
                                "opset": params.export.opset, "int8_accepted": bool(int8.get("accepted", False))}
    atomic_write_text(paths.metrics / "export.json", json.dumps(record, indent=2))
    log(f"export: {paths.onnx.relative_to(paths.root)} ({size_mb:.1f} MB, {len(head.classes)} classes, input "
        f"uint8 NHWC {params.backbone.input_size}px), a candidate; parity on "
        f"{report.images} images at batch {report.batch_sizes}: max |dp| {report.max_abs_diff_probs:.1e}, "
        f"argmax agree {report.argmax_agree}; {summary.seconds:.1f}s")
    return summary


def main(argv: list[str] | None = None) -> None:
    run_stage_cli(run_export, __name__, argv)


if __name__ == "__main__":
    main()
