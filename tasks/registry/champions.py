"""Champion registry and the one deploy repository: only promoted models are deployable, and they are published as
one set.

Layout under `models/` (both folders DVC-tracked with `dvc add`; their pointers `models/registry.dvc` and
`models/serving.dvc` go to git, so a fresh clone + `dvc pull` gets every champion back):
    registry/v0001/ ...        a complete set per promotion: model.onnx, labels.txt, MODEL_CARD.md, metrics.json,
                               promotion.json (why, against what, the model's contract), test_keys.json (its test split)
    registry/champion.json     the pointer to the current champion, {"version": N}, replaced atomically and last
    serving/triton/<name>/     THE deploy repository (Triton layout): the champion's config.pbtxt and labels.txt, and
                               a version folder N/ for every promoted version with the champion's contract (classes and
                               input size); rebuilt beside the old folder and swapped in as one step
    rejected/<UTC time>[-n]/   challengers that lost, with reason.json, for inspection (never deployable)

A plain run builds a *candidate* in `models/` (model.onnx, labels.txt, MODEL_CARD.md); nothing here changes until
`promote` is called, which the gate in `tasks.registry.promotion` decides.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path

from tasks.core.files import atomic_dir, atomic_write_text, link_or_copy
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths
from tasks.core.progress import log
from tasks.modality.input_contract import InputContract
from tasks.modality.registry import contract_from_registry, modality_for
from tasks.registry.triton_repo import write_triton_repo

_VERSION = re.compile(r"^v(\d{4,})$")
ARTIFACTS = ("model.onnx", "labels.txt", "MODEL_CARD.md")
POINTER = "champion.json"


def registry_dir(paths: ProjectPaths) -> Path:
    return paths.models / "registry"


def serving_dir(paths: ProjectPaths) -> Path:
    """The deploy repository's root: mount this folder as Triton's model repository."""
    return paths.models / "serving" / "triton"


def deployable_dirs(paths: ProjectPaths) -> list[Path]:
    """The folders that hold every deployable file (what DVC tracks and what a rejection must leave untouched)."""
    return [registry_dir(paths), serving_dir(paths).parent]


def versions(paths: ProjectPaths) -> dict[int, Path]:
    """Every promoted version's folder, by version number."""
    reg = registry_dir(paths)
    found = [(int(m.group(1)), p) for p in reg.iterdir() if (m := _VERSION.match(p.name))] if reg.exists() else []
    return dict(sorted(found))


def champion_version(paths: ProjectPaths) -> int | None:
    """The champion's version number, or None before the first promotion."""
    pointer = registry_dir(paths) / POINTER
    return int(json.loads(pointer.read_text())["version"]) if pointer.exists() else None


def champion_dir(paths: ProjectPaths) -> Path | None:
    """The champion's registry folder, or None."""
    version = champion_version(paths)
    return None if version is None else registry_dir(paths) / f"v{version:04d}"


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


def promote(paths: ProjectPaths, params: Params, metrics: dict, record: dict, test_keys: list[str]) -> int:
    """Register the candidate (models/model.onnx + labels + card) as a new version and make it the champion.

    Steps, each safe to interrupt (and each fsynced before the rename that publishes it): the version folder is
    written under a temp name and renamed in; the deploy repository's model folder is rebuilt beside the old one and
    swapped in as one step; the champion pointer is replaced last. Returns the new version number."""
    version = max(versions(paths), default=0) + 1
    classes = [c for c in paths.labels.read_text().split("\n") if c]
    contract = modality_for(params.backbone).input_contract(params, classes)
    final = registry_dir(paths) / f"v{version:04d}"
    with atomic_dir(final, durable=True) as tmp:
        for name in ARTIFACTS:
            if (paths.models / name).exists():
                link_or_copy(paths.models / name, tmp / name)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (tmp / "promotion.json").write_text(json.dumps(record | {"version": version,
                                                                "contract": contract.registry_entry()}, indent=2))
        (tmp / "test_keys.json").write_text(json.dumps(sorted(test_keys)))
    same = {v: folder / "model.onnx" for v, folder in versions(paths).items()
            if contract.same_input(version_contract(folder))}
    write_triton_repo(serving_dir(paths), params.export.triton_name, contract, params.export.triton_max_batch_size,
                      same, durable=True)
    if len(same) < len(versions(paths)):
        log(f"promote: v{version:04d} changes the model's contract (classes or input size): the deploy repository now "
            f"serves versions {sorted(same)} only; earlier versions stay in {registry_dir(paths)}")
    atomic_write_text(registry_dir(paths) / POINTER, json.dumps({"version": version}) + "\n", durable=True)
    return version


def keep_rejected(paths: ProjectPaths, metrics: dict, reason: dict) -> Path:
    """Keep a losing challenger (model, labels, card, metrics, reason) under models/rejected/<UTC time>[-n]/; two
    rejections in the same second get two folders."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    root = paths.models / "rejected"
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1000):
        dest = root / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            dest.mkdir()
            break
        except FileExistsError:
            continue
    for name in ARTIFACTS:
        if (paths.models / name).exists():
            shutil.copyfile(paths.models / name, dest / name)
    (dest / "metrics.json").write_text(json.dumps(metrics, indent=2))
    atomic_write_text(dest / "reason.json", json.dumps(reason, indent=2))
    return dest


def decide(params: Params, scores: dict) -> tuple[bool, str]:
    """(promote?, why): the challenger must not be worse by more than `retrain.tolerance` on `retrain.metric`, on the
    current test split nor on the trusted hold-out."""
    metric, tol = params.retrain.metric, params.retrain.tolerance
    if scores["champion"] is None:
        return True, f"no champion yet; challenger {metric} {scores['challenger'][metric]:.4f}"
    verdicts = []
    for view, ch, cp in (("current test split", "challenger", "champion"),
                         ("trusted hold-out", "challenger_holdout", "champion_holdout")):
        if ch not in scores:
            continue
        a, b = scores[ch][metric], scores[cp][metric]
        ok = a >= b - tol
        verdicts.append((ok, f"{view}: challenger {metric} {a:.4f} {'>=' if ok else '<'} champion {b:.4f} - {tol}"))
    return all(ok for ok, _ in verdicts), "; ".join(text for _, text in verdicts)
