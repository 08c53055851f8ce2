"""Triton model repository folder: `<root>/<name>/{config.pbtxt, labels.txt, <version>/model.onnx ...}`.

The config is written in Triton's protobuf text format (ModelConfig): platform `onnxruntime_onnx`, dims exclude the
batch axis (which `max_batch_size` > 0 makes implicit), every version folder served (`version_policy: all`;
Triton's default serves only the newest), dynamic batching on, and `label_filename` on the `probs`
output so Triton's classification extension returns class names.
"""

from __future__ import annotations

from pathlib import Path

from tasks.core.files import atomic_dir, link_or_copy


def config_pbtxt(name: str, input_size: int, n_classes: int, max_batch_size: int) -> str:
    """The config.pbtxt text for a headstart classifier."""
    return f"""name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
version_policy: {{ all {{ }} }}
input [
  {{
    name: "images"
    data_type: TYPE_UINT8
    format: FORMAT_NHWC
    dims: [ {input_size}, {input_size}, 3 ]
  }}
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


def write_triton_repo(root: Path, name: str, classes: list[str], input_size: int, max_batch_size: int,
                      versions: dict[int, Path], durable: bool = False) -> Path:
    """Write the model folder `root/name` (config.pbtxt, labels.txt, one `<version>/model.onnx` per entry of
    `versions`, hard-linked) beside the old one and swap it in as one step; return its path. Every version must share
    the config's contract (classes and input size): Triton applies one config to all versions of a model."""
    dest = root / name
    with atomic_dir(dest, durable=durable) as tmp:
        (tmp / "config.pbtxt").write_text(config_pbtxt(name, input_size, len(classes), max_batch_size))
        (tmp / "labels.txt").write_text("\n".join(classes) + "\n")
        for version, onnx_path in sorted(versions.items()):
            (tmp / str(version)).mkdir()
            link_or_copy(onnx_path, tmp / str(version) / "model.onnx")
    return dest
