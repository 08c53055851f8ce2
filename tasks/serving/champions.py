"""Champion registry: every promoted model kept as an immutable version, one of them served as the champion.

Layout under `models/`:
    registry/v0001/ ...         a complete deployable set per promotion: model.onnx, labels.txt, MODEL_CARD.md,
                                metrics.json, promotion.json (why it was promoted, against what)
    champion -> registry/v000N  a symlink, replaced atomically (a reader sees the old or the new set, never half)
    serving/triton/<name>/      Triton repository: config.pbtxt, labels.txt and one version folder N/ per promotion
                                (Triton serves the latest version by default)
    rejected/<UTC time>/        challengers that lost, with reason.json, for inspection
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from pathlib import Path

from tasks.core.files import atomic_write_text, link_or_copy
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths
from tasks.serving.triton_repo import config_pbtxt

_VERSION = re.compile(r"^v(\d{4,})$")
ARTIFACTS = ("model.onnx", "labels.txt", "MODEL_CARD.md")


def registry_dir(paths: ProjectPaths) -> Path:
    return paths.models / "registry"


def champion_link(paths: ProjectPaths) -> Path:
    return paths.models / "champion"


def champion_version(paths: ProjectPaths) -> int | None:
    """The champion's version number, or None before the first promotion."""
    link = champion_link(paths)
    if not link.exists():
        return None
    m = _VERSION.match(Path(os.readlink(link)).name) if link.is_symlink() else None
    return int(m.group(1)) if m else None


def champion_model(paths: ProjectPaths) -> Path | None:
    """Path of the champion's ONNX model, or None."""
    path = champion_link(paths) / "model.onnx"
    return path if path.exists() else None


def champion_test_keys(paths: ProjectPaths) -> set[str] | None:
    """sha256 of the test images the champion was judged on (its trusted hold-out), or None."""
    f = champion_link(paths) / "test_keys.json"
    return set(json.loads(f.read_text())) if f.exists() else None


def promote(paths: ProjectPaths, metrics: dict, record: dict, input_size: int, triton_name: str,
            max_batch_size: int, test_keys: list[str] | None = None) -> int:
    """Register the current export (models/model.onnx + labels + card) as a new version and make it the champion.

    Steps, each safe to interrupt: the version folder is written under a temp name and renamed; the Triton version
    folder is added before the config that lists the labels is replaced; the champion symlink is swapped last with
    an atomic rename. Returns the new version number."""
    reg = registry_dir(paths)
    reg.mkdir(parents=True, exist_ok=True)
    versions = [int(m.group(1)) for p in reg.iterdir() if (m := _VERSION.match(p.name))]
    version = max(versions, default=0) + 1
    tmp = reg / f".v{version:04d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in ARTIFACTS:
        src = paths.models / name
        if src.exists():
            link_or_copy(src, tmp / name)
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (tmp / "promotion.json").write_text(json.dumps(record | {"version": version}, indent=2))
    if test_keys is not None:
        (tmp / "test_keys.json").write_text(json.dumps(sorted(test_keys)))
    final = reg / f"v{version:04d}"
    os.replace(tmp, final)

    triton = paths.models / "serving" / "triton" / triton_name
    vdir = triton / str(version)
    vdir.mkdir(parents=True, exist_ok=True)
    link_or_copy(final / "model.onnx", vdir / "model.onnx")
    classes = (final / "labels.txt").read_text().split("\n")
    classes = [c for c in classes if c]
    atomic_write_text(triton / "labels.txt", "\n".join(classes) + "\n")
    atomic_write_text(triton / "config.pbtxt", config_pbtxt(triton_name, input_size, len(classes), max_batch_size))

    link = champion_link(paths)
    new_link = link.with_name(".champion.new")
    new_link.unlink(missing_ok=True)
    os.symlink(Path("registry") / final.name, new_link)
    if link.exists() and not link.is_symlink():
        shutil.rmtree(link)  # a plain folder left by hand: replaced by the managed link
    os.replace(new_link, link)
    return version


def keep_rejected(paths: ProjectPaths, metrics: dict, reason: dict) -> Path:
    """Keep a losing challenger (model, labels, card, metrics, reason) under models/rejected/<UTC time>/."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    dest = paths.models / "rejected" / stamp
    dest.mkdir(parents=True, exist_ok=True)
    for name in ARTIFACTS:
        src = paths.models / name
        if src.exists():
            shutil.copyfile(src, dest / name)
    (dest / "metrics.json").write_text(json.dumps(metrics, indent=2))
    atomic_write_text(dest / "reason.json", json.dumps(reason, indent=2))
    return dest


def decide(params: Params, scores: dict) -> tuple[bool, str]:
    """(promote?, why): the challenger must not be worse by more than the tolerance on the current test split nor on
    the champion's trusted hold-out."""
    metric, tol = params.retrain.metric, params.retrain.tolerance
    if scores["champion"] is None:
        return True, f"no champion yet; challenger {metric} {scores['challenger'][metric]:.4f}"
    verdicts = []
    for view, ch, cp in (("current test split", "challenger", "champion"),
                         ("champion's hold-out", "challenger_trusted", "champion_trusted")):
        if ch not in scores:
            continue
        a, b = scores[ch][metric], scores[cp][metric]
        ok = a >= b - tol
        verdicts.append((ok, f"{view}: challenger {metric} {a:.4f} {'>=' if ok else '<'} champion {b:.4f} - {tol}"))
    return all(ok for ok, _ in verdicts), "; ".join(text for _, text in verdicts)
