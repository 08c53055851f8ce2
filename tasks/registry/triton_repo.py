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


def fill_model_folder(folder: Path, name: str, contract: InputContract, max_batch_size: int,
                      versions: dict[int, Path]) -> None:
    """Write a model folder's contents into the empty `folder`: config.pbtxt, labels.txt and one
    `<version>/model.onnx` per entry of `versions` (hard-linked). Every version must share `contract`
    (`InputContract.same_input`): Triton applies one config to all versions of a model."""
    (folder / "config.pbtxt").write_text(contract.config_pbtxt(name, max_batch_size))
    (folder / "labels.txt").write_text(labels_text(contract))
    for version, onnx_path in sorted(versions.items()):
        (folder / str(version)).mkdir()
        link_or_copy(onnx_path, folder / str(version) / "model.onnx")


def labels_text(contract: InputContract) -> str:
    """The labels.txt of a model folder: the class names, one per line, in output order."""
    return "\n".join(contract.classes) + "\n"


def write_triton_repo(root: Path, name: str, contract: InputContract, max_batch_size: int,
                      versions: dict[int, Path], durable: bool = False) -> Path:
    """Write the model folder `root/name` (see `fill_model_folder`) beside the old one and swap it in as one step;
    return its path. (A promotion builds it in its staging area instead: `tasks.registry.deploy_repo`.)"""
    dest = root / name
    with atomic_dir(dest, durable=durable) as tmp:
        fill_model_folder(tmp, name, contract, max_batch_size, versions)
    return dest
