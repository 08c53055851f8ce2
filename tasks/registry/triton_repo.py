"""Triton model repository folder: `<root>/<name>/{config.pbtxt, labels.txt, <version>/model.onnx ...}`.

The config is Triton's ModelConfig protobuf, built by the versions' `InputContract` (`tasks.modality.input_contract`)
and written in protobuf's text format: platform `onnxruntime_onnx`, dims exclude the batch axis (which
`max_batch_size` > 0 makes implicit), every version folder served (`version_policy: all`; Triton's default serves only
the newest), dynamic batching on, and `label_filename` on the `probs` output so Triton's classification extension
returns class names.
"""

from __future__ import annotations

from pathlib import Path

from tasks.core.files import atomic_dir, link_or_copy
from tasks.modality.input_contract import InputContract


def write_triton_repo(root: Path, name: str, contract: InputContract, max_batch_size: int,
                      versions: dict[int, Path], durable: bool = False) -> Path:
    """Write the model folder `root/name` (config.pbtxt, labels.txt, one `<version>/model.onnx` per entry of
    `versions`, hard-linked) beside the old one and swap it in as one step; return its path. Every version must share
    `contract` (`InputContract.same_input`): Triton applies one config to all versions of a model."""
    dest = root / name
    with atomic_dir(dest, durable=durable) as tmp:
        (tmp / "config.pbtxt").write_text(contract.config_pbtxt(name, max_batch_size))
        (tmp / "labels.txt").write_text("\n".join(contract.classes) + "\n")
        for version, onnx_path in sorted(versions.items()):
            (tmp / str(version)).mkdir()
            link_or_copy(onnx_path, tmp / str(version) / "model.onnx")
    return dest
