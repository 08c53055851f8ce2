"""Stage `export`: backbone + head as one ONNX graph, gated by parity with torch on real held-out images.

The graph takes `images`: uint8 RGB, NHWC, (batch, S, S, 3) at the backbone's input size S (resize on the client:
`tasks.images.load_uint8` is the reference), and returns `logits` and `probs` (batch, classes). NHWC uint8 is what
image decoders produce, a quarter of the bytes of float32 on the wire, and keeps normalisation inside the graph
so no client can get it wrong. The batch axis is dynamic. Class names, input contract and provenance are stored in
the model's metadata_props; `models/labels.txt` lists classes one per line (Triton's label file format).

The ONNX file is written to a staging path, checked (onnx.checker, then ONNX Runtime vs torch eager on up to
`export.parity_images` val images at batch 1, 7 and the rest: max |p_onnx - p_torch| <= export.parity_tolerance and
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

from tasks.atomic import atomic_write_text
from tasks.backbones import ImageModel, build_backbone, feature_identity
from tasks.engines import OrtEngine, export_onnx
from tasks.errors import UserError
from tasks.ingest import read_manifest
from tasks.head import LinearHead
from tasks.images import load_uint8
from tasks.params import Params
from tasks.paths import ProjectPaths, default_paths
from tasks.stage_cli import run_stage_cli
from tasks.progress import log


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


def build_classifier(params: Params, head: LinearHead) -> ImageModel:
    """The full torch model: uint8 NHWC -> (logits, probs), with the head as an nn.Linear."""
    loaded = build_backbone(params.backbone, params.seed)
    linear = torch.nn.Linear(head.weight.shape[1], head.weight.shape[0])
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(head.weight))
        linear.bias.copy_(torch.from_numpy(head.bias))
    return ImageModel(loaded.model, loaded.spec.mean, loaded.spec.std, head=linear).eval()


def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def model_metadata(params: Params, head: LinearHead, paths: ProjectPaths) -> dict[str, str]:
    """metadata_props written into the ONNX model (all values are strings, JSON where structured)."""
    metrics_file = paths.metrics / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    p = params.backbone
    return {
        "headstart.classes": json.dumps(head.classes),
        "headstart.input": json.dumps({"name": "images", "dtype": "uint8", "layout": "NHWC", "color": "RGB",
                                       "size": [p.input_size, p.input_size], "resize": p.resize,
                                       "note": "resize on the client; scaling and normalisation are in the graph"}),
        "headstart.outputs": json.dumps({"logits": "raw scores (batch, classes)", "probs": "softmax of logits"}),
        "headstart.backbone": json.dumps(feature_identity(p, params.seed)),
        "headstart.fingerprint": head.fingerprint,
        "headstart.params_sha256": hashlib.sha256(json.dumps(params.model_dump(mode="json"), sort_keys=True)
                                                  .encode()).hexdigest(),
        "headstart.git_commit": _git_commit(paths.root),
        "headstart.metrics": json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float))}),
        "headstart.created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def parity_images(params: Params, paths: ProjectPaths) -> np.ndarray:
    """Up to `export.parity_images` real held-out images (val, else test, else train) as uint8 NHWC."""
    m = read_manifest(paths)
    for split in ("val", "test", "train"):
        rows = m[m["split"] == split]
        if len(rows):
            break
    rows = rows.sort_values("sha256").head(params.export.parity_images)
    size, mode = params.backbone.input_size, params.backbone.resize
    return np.stack([load_uint8(paths.root / p, size, mode) for p in rows["path"]])


def check_parity(model: ImageModel, onnx_path: Path, images: np.ndarray, tolerance: float) -> ParityReport:
    """Run ONNX Runtime and torch eager on the same images at batch 1, 7 and the remainder; compare probabilities."""
    engine = OrtEngine(onnx_path, threads=0)
    sizes, worst, agree, i = [], 0.0, True, 0
    for bs in (1, 7, len(images)):
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


def run_export(params: Params, paths: ProjectPaths | None = None) -> ExportSummary:
    """Export backbone + head to `models/model.onnx` (+ labels.txt), only if the parity gate passes."""
    paths = paths or default_paths()
    t0 = time.perf_counter()
    head = LinearHead.load(paths.head)
    model = build_classifier(params, head)
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
    size_mb = paths.onnx.stat().st_size / 1e6
    summary = ExportSummary(str(paths.onnx), str(paths.labels), size_mb, report, time.perf_counter() - t0)
    record = asdict(summary) | {"onnx": paths.onnx.relative_to(paths.root).as_posix(),
                                "labels": paths.labels.relative_to(paths.root).as_posix()}
    atomic_write_text(paths.metrics / "export.json", json.dumps(record, indent=2))
    log(f"export: {paths.onnx.relative_to(paths.root)} ({size_mb:.1f} MB, {len(head.classes)} classes, input "
        f"uint8 NHWC {params.backbone.input_size}px); parity on {report.images} images: max |dp| "
        f"{report.max_abs_diff_probs:.1e}, argmax agree {report.argmax_agree}; {summary.seconds:.1f}s")
    return summary


def main(argv: list[str] | None = None) -> None:
    run_stage_cli(run_export, __name__, argv)


if __name__ == "__main__":
    main()
