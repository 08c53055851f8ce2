"""Triton model repository folder: `<root>/<name>/{config.pbtxt, labels.txt, <version>/model.onnx ...}`.

The config is written in Triton's protobuf text format (ModelConfig): platform `onnxruntime_onnx`, dims exclude the
batch axis (which `max_batch_size` > 0 makes implicit), every version folder served (`version_policy: all`;
Triton's default serves only the newest), dynamic batching on, and `label_filename` on the `probs`
output so Triton's classification extension returns class names.
"""

from __future__ import annotations

from pathlib import Path

from tasks.core.files import atomic_dir, link_or_copy

_IMAGE_INPUT = """  {{
    name: "images"
    data_type: TYPE_UINT8
    format: FORMAT_NHWC
    dims: [ {size}, {size}, 3 ]
  }}"""
# one string per batch item: the request's [batch, 1] is the graph's [batch] (Triton needs dims of at least one)
_TEXT_INPUT = """  {
    name: "texts"
    data_type: TYPE_STRING
    dims: [ 1 ]
    reshape: { shape: [ ] }
  }"""
TEXT_MODEL_NOTE = ("# a text model: the tokenizer runs inside the graph as onnxruntime-extensions ops; Triton's\n"
                   "# onnxruntime backend must load that library (onnxruntime_extensions.get_library_path()), e.g.\n"
                   "# through LD_PRELOAD or a custom-op build of the backend; `headstart serve` registers it itself.\n")


def model_contract(classes: list[str], modality: str, input_size: int) -> dict:
    """What a client of a model version relies on: its classes and input (an image size, or texts). Versions with
    the same contract can share one config.pbtxt."""
    if modality == "text":
        return {"classes": list(classes), "input": "texts"}
    return {"classes": list(classes), "input_size": int(input_size)}


def config_pbtxt(name: str, contract: dict, max_batch_size: int) -> str:
    """The config.pbtxt text for a headstart classifier with `contract` (`model_contract`)."""
    text = contract.get("input") == "texts"
    n_classes = len(contract["classes"])
    inputs = _TEXT_INPUT if text else _IMAGE_INPUT.format(size=contract["input_size"])
    return f"""{TEXT_MODEL_NOTE if text else ""}name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
version_policy: {{ all {{ }} }}
input [
{inputs}
]
output [
  {{
    name: "logits"
    data_type: TYPE_FP32
    dims: [ {n_classes} ]
  }},
  {{
    name: "probs"
    data_type: TYPE_FP32
    dims: [ {n_classes} ]
    label_filename: "labels.txt"
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: 2000
}}
"""


def write_triton_repo(root: Path, name: str, contract: dict, max_batch_size: int,
                      versions: dict[int, Path], durable: bool = False) -> Path:
    """Write the model folder `root/name` (config.pbtxt, labels.txt, one `<version>/model.onnx` per entry of
    `versions`, hard-linked) beside the old one and swap it in as one step; return its path. Every version must share
    the config's contract (`model_contract`): Triton applies one config to all versions of a model."""
    dest = root / name
    with atomic_dir(dest, durable=durable) as tmp:
        (tmp / "config.pbtxt").write_text(config_pbtxt(name, contract, max_batch_size))
        (tmp / "labels.txt").write_text("\n".join(contract["classes"]) + "\n")
        for version, onnx_path in sorted(versions.items()):
            (tmp / str(version)).mkdir()
            link_or_copy(onnx_path, tmp / str(version) / "model.onnx")
    return dest
