"""The pipeline's stages by name, in order: what `dvc.yaml`, the Prefect flows and the CLI agree on.

Light on purpose: naming the stages imports none of them (the CLI's `--help` must not pay for torch or sklearn).
"""

from __future__ import annotations

import importlib
from typing import Callable

STAGES = ("ingest", "features", "audit", "head", "finetune", "export", "evaluate")  # dvc.yaml: same stages, same order


def stage_function(name: str) -> Callable:
    """`tasks.<name>.run_<name>`: the plain function that runs one stage (imported on demand)."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
    return getattr(importlib.import_module(f"tasks.{name}"), f"run_{name}")
