"""Where the champion registry and the deploy repository live, and how to read them.

    models/registry/v0001/ ...   a complete set per promotion: model.onnx, labels.txt, MODEL_CARD.md, metrics.json,
                                 promotion.json (why, against what, the model's sha256 and contract), test_keys.json
    models/registry/champion.json   {"version": N}: the champion pointer, the commit point of every promotion
    models/serving/triton/<name>/   THE deploy repository (Triton layout), derived from the registry and the pointer
    models/rejected/<UTC time>[-n]/ challengers that lost, and versions a killed promotion left uncommitted
    models/.promotion/           the one staging area of a promotion in progress (never deployable, wiped by the next)

A version folder above the pointer is not committed: readers here never list it, and the next promotion
quarantines it (`tasks.registry.transaction`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tasks.core.paths import ProjectPaths
from tasks.modality.input_contract import InputContract
from tasks.modality.registry import contract_from_registry

_VERSION = re.compile(r"^v(\d{4,})$")
ARTIFACTS = ("model.onnx", "labels.txt", "MODEL_CARD.md")
POINTER = "champion.json"


def registry_dir(paths: ProjectPaths) -> Path:
    return paths.models / "registry"


def serving_dir(paths: ProjectPaths) -> Path:
    """The deploy repository's root: mount this folder as Triton's model repository."""
    return paths.models / "serving" / "triton"


def rejected_dir(paths: ProjectPaths) -> Path:
    """Where losing challengers and quarantined uncommitted versions are kept (never deployable)."""
    return paths.models / "rejected"


def deployable_dirs(paths: ProjectPaths) -> list[Path]:
    """The folders that hold every deployable file (what DVC tracks and what a rejection must leave untouched)."""
    return [registry_dir(paths), serving_dir(paths).parent]


def version_dir(paths: ProjectPaths, version: int) -> Path:
    return registry_dir(paths) / f"v{version:04d}"


def version_folders(paths: ProjectPaths) -> dict[int, Path]:
    """Every version folder in the registry by number, committed or not (only recovery needs the uncommitted)."""
    reg = registry_dir(paths)
    found = [(int(m.group(1)), p) for p in reg.iterdir() if (m := _VERSION.match(p.name))] if reg.exists() else []
    return dict(sorted(found))


def champion_version(paths: ProjectPaths) -> int | None:
    """The champion's version number, or None before the first promotion."""
    pointer = registry_dir(paths) / POINTER
    return int(json.loads(pointer.read_text())["version"]) if pointer.exists() else None


def versions(paths: ProjectPaths) -> dict[int, Path]:
    """Every committed version's folder (at or below the champion pointer), by version number."""
    champion = champion_version(paths)
    return {} if champion is None else {v: p for v, p in version_folders(paths).items() if v <= champion}


def champion_dir(paths: ProjectPaths) -> Path | None:
    """The champion's registry folder, or None."""
    version = champion_version(paths)
    return None if version is None else version_dir(paths, version)


def champion_model(paths: ProjectPaths) -> Path | None:
    """Path of the champion's ONNX model, or None."""
    folder = champion_dir(paths)
    return folder / "model.onnx" if folder is not None and (folder / "model.onnx").exists() else None


def holdout_keys(paths: ProjectPaths) -> set[str]:
    """The trusted hold-out: sha256 of every image in the test split of any promoted version. It never shrinks when
    a model is promoted, and new, unvetted test images join it only once a model judged on them was promoted."""
    keys: set[str] = set()
    for folder in versions(paths).values():
        f = folder / "test_keys.json"
        if f.exists():
            keys |= set(json.loads(f.read_text()))
    return keys


def version_contract(folder: Path) -> InputContract | None:
    """A promoted version's input contract, from its promotion.json (None for a version that recorded none)."""
    entry = json.loads((folder / "promotion.json").read_text()).get("contract")
    return contract_from_registry(entry) if entry else None
