"""Writing an int8 copy of an exported model: the fp32 model's metadata kept, the precision recorded."""

from __future__ import annotations

from pathlib import Path

import onnx

from tasks.core.files import atomic_path


def save_with_metadata(model: onnx.ModelProto, fp32_path: Path, dest: Path, recipe: str) -> None:
    """Write `model` to `dest` atomically with the fp32 model's metadata_props and a `headstart.precision` entry."""
    src = onnx.load(str(fp32_path), load_external_data=False)
    del model.metadata_props[:]
    for p in src.metadata_props:
        model.metadata_props.add(key=p.key, value=p.value)
    model.metadata_props.add(key="headstart.precision", value=recipe)
    with atomic_path(dest, suffix=".onnx") as t:
        onnx.save(model, str(t))
