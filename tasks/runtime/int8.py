"""int8 variant of the exported model, kept only if it keeps its accuracy and pays on this machine.

Two recipes, by modality:
- **images**: ONNX Runtime static quantisation (QDQ), calibrated on training images (`tasks.runtime.int8_image`):
  the run-time "same" padding folded into the convolutions, then every convolution (depthwise too), ReLU6, residual
  Add, the pooling and the head in int8 (per-channel int8 weights, uint8 activations, MinMax); the in-graph
  preprocessing, the standardisation and the softmax stay in float;
- **texts**: dynamic quantisation of the encoder's matrix multiplications (`MatMul` and the fused `Attention`
  projections; int8 weights, activations quantised per batch at run time, no calibration). The tokenizer, the
  embeddings, layer norms, softmax and the head stay in float. The graph still takes UTF-8 strings.

The variant is written only if (1) its accuracy on the validation split drops by no more than
`export.int8_max_accuracy_drop` from the fp32 model's and (2) it runs at least `export.int8_min_speedup` times as fast
as the fp32 model at batch 32 on this machine (paired, interleaved runs; median). A variant that fails either is not
written and the report says why in one line, naming the CPU's int8 instructions (`int8_instructions`).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from tasks.core.files import atomic_path
from tasks.runtime.int8_files import save_with_metadata
from tasks.runtime.int8_image import IMAGE_RECIPE, quantize_int8  # noqa: F401  (the image recipe; re-exported)


@dataclass
class Int8Report:
    """fp32 vs int8 on the same images and machine."""

    accepted: bool
    reason: str
    calibration_images: int
    eval_images: int
    fp32_accuracy: float
    int8_accuracy: float
    accuracy_drop: float
    max_allowed_drop: float
    fp32_mb: float
    int8_mb: float
    fp32_img_s: float
    int8_img_s: float
    speedup: float  # median over paired runs at batch 32 of fp32 seconds / int8 seconds
    min_speedup: float
    cpu_int8: str
    recipe: str
    seconds: float


TEXT_RECIPE = ("dynamic: per-channel int8 weights of MatMul and fused Attention, activations quantised per batch; "
               "the rest float")


def quantize_dynamic_int8(fp32_path: Path, dest: Path, *, op_types: tuple[str, ...] = ("MatMul", "Attention"),
                          per_channel: bool = True) -> None:
    """Write a dynamically quantised copy of a text model `fp32_path` to `dest` (atomically), keeping its
    metadata_props: int8 weights for `op_types` (the encoder's matrix multiplications; the head is a Gemm and stays
    float), uint8 activations quantised per batch at run time. The strings-in contract is unchanged: the tokenizer
    sub-graph (a Loop over onnxruntime-extensions ops) is left as it is."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        # a private copy: the quantizer writes its shape-inferred model beside its input
        src, out = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        model = onnx.load(str(fp32_path))
        unique_opsets(model)
        onnx.save(model, str(src))
        # the custom tokenizer ops have no shape inference: tensors whose type is unknown are float here
        quantize_dynamic(str(src), str(out), op_types_to_quantize=list(op_types), per_channel=per_channel,
                         weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        save_with_metadata(onnx.load(str(out)), fp32_path, dest, f"int8 ({TEXT_RECIPE})")


def unique_opsets(model: onnx.ModelProto) -> None:
    """One opset import per domain ("" and "ai.onnx" are one), the highest version kept: graphs merged by
    `onnx.compose` before it was fixed in `tasks.model.tokenizer_graph` list the default domain twice, which the
    quantizer refuses."""
    best: dict[str, onnx.OperatorSetIdProto] = {}
    for o in model.opset_import:
        domain = "" if o.domain == "ai.onnx" else o.domain
        if domain not in best or o.version > best[domain].version:
            best[domain] = onnx.helper.make_opsetid(domain, o.version)
    del model.opset_import[:]
    model.opset_import.extend(best.values())


def int8_instructions() -> str:
    """The CPU's int8 dot-product instructions as Linux reports them ("AMX, AVX-512 VNNI", ...), or what it has
    instead ("AVX2, no VNNI"): where int8 matrix multiplication has no VNNI, ONNX Runtime emulates it with
    16-bit multiply-adds and int8 often runs no faster than fp32."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    named = {"amx_int8": "AMX", "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI"}
    found = [label for flag, label in named.items() if flag in flags]
    if found:
        return ", ".join(found)
    return ("AVX-512, no VNNI" if "avx512f" in flags else "AVX2, no VNNI" if "avx2" in flags
            else "no AVX2" if flags else "unknown")


def _accuracy(clf, samples: np.ndarray, labels: np.ndarray, classes: list[str]) -> tuple[float, float]:
    """(accuracy, samples/s) of a loaded classifier on `samples`, one pass at batch 32 after a warm-up batch."""
    clf.probs(samples[:8])
    t0 = time.perf_counter()
    probs = clf.probs_batched(samples)
    speed = len(samples) / (time.perf_counter() - t0)
    return float((np.array(classes)[probs.argmax(1)] == labels).mean()), speed


def paired_speedup(fp32, int8, batch: np.ndarray, pairs: int = 5) -> float:
    """Median over `pairs` of (fp32 seconds / int8 seconds) on the same `batch`, the two run back to back in
    alternating order: on a shared machine, load that changes between the two halves of a pair cancels."""
    ratios = []
    for k in range(pairs):
        seconds = {}
        for name, clf in ((("fp32", fp32), ("int8", int8)) if k % 2 == 0 else (("int8", int8), ("fp32", fp32))):
            t0 = time.perf_counter()
            clf.probs(batch)
            seconds[name] = time.perf_counter() - t0
        ratios.append(seconds["fp32"] / seconds["int8"])
    return float(statistics.median(ratios))


def build_int8(fp32_path: Path, dest: Path, quantize: Callable[[Path, Path], None], eval_samples: np.ndarray,
               eval_labels: np.ndarray, classes: list[str], max_drop: float, min_speedup: float = 0.0, *,
               calibration_images: int = 0, recipe: str = IMAGE_RECIPE, threads: int = 0) -> Int8Report:
    """Quantise with `quantize(src, dst)`, then compare with fp32 on `eval_samples` (accuracy) and on a batch of 32
    of them (paired speed); `dest` exists afterwards only if the variant loses at most `max_drop` accuracy and runs
    at least `min_speedup` times as fast."""
    from tasks.runtime.onnx_classifier import OnnxClassifier

    t0 = time.perf_counter()
    cpu = int8_instructions()
    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / "model.onnx"
        quantize(fp32_path, candidate)
        fp32, int8 = OnnxClassifier(fp32_path, threads), OnnxClassifier(candidate, threads)
        acc32, ips32 = _accuracy(fp32, eval_samples, eval_labels, classes)
        acc8, ips8 = _accuracy(int8, eval_samples, eval_labels, classes)
        speedup = paired_speedup(fp32, int8, eval_samples[:32])
        drop = acc32 - acc8
        if drop > max_drop:
            accepted, reason = False, (f"accuracy drop {drop:+.3f} > export.int8_max_accuracy_drop {max_drop}; "
                                       f"int8 model not written, fp32 only")
        elif speedup < min_speedup:
            accepted, reason = False, (f"int8 does not pay on this CPU ({cpu}): {speedup:.2f}x fp32 at batch "
                                       f"{min(32, len(eval_samples))} < export.int8_min_speedup {min_speedup}; "
                                       f"int8 model not written, fp32 only")
        else:
            accepted, reason = True, (f"accuracy drop {drop:+.3f} <= {max_drop}, {speedup:.2f}x fp32 >= "
                                      f"{min_speedup} on this CPU ({cpu})")
        if accepted:
            with atomic_path(dest, suffix=".onnx") as t:
                t.write_bytes(candidate.read_bytes())
        else:
            dest.unlink(missing_ok=True)
        return Int8Report(accepted, reason, calibration_images, len(eval_samples), acc32, acc8, drop, max_drop,
                          fp32_path.stat().st_size / 1e6, candidate.stat().st_size / 1e6, ips32, ips8, speedup,
                          min_speedup, cpu, recipe, time.perf_counter() - t0)
