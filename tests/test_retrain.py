"""Scheduled retraining: no-op without new data, incremental with it, never promotes a worse model; DVC round trip."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys

import numpy as np
import pytest

from tasks.core.params import write_overrides
from tests.conftest import dvc_status_clean, make_project, run

CLASSES = ("animals", "food", "transportation")


@pytest.fixture(scope="module")
def retrain_project(tmp_path_factory, clipart_raw):
    base = tmp_path_factory.mktemp("retrain")
    src, later = base / "src", base / "later"
    for c in CLASSES:
        files = sorted((clipart_raw / c).rglob("*.png"))
        for i, f in enumerate(files):
            dest = (src if i < 36 else later) / c / f.relative_to(clipart_raw / c)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest)
    paths = make_project(base / "proj", src, ["retrain.tolerance=0.05"], dvc=True)
    run(["git", "add", "-A"], paths.root)
    run(["git", "commit", "-qm", "project"], paths.root)
    return paths, later


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_retrain_lifecycle(retrain_project, prefect_harness, clipart_raw):
    from flows.retrain import retrain_flow

    paths, later = retrain_project
    root = str(paths.root)
    first = retrain_flow(root=root)
    assert first["action"] == "promoted" and first["champion_version"] == 1
    champion = paths.models / "champion"
    assert champion.is_symlink() and (champion / "model.onnx").exists() and (champion / "MODEL_CARD.md").exists()
    assert (paths.models / "serving" / "triton" / "headstart" / "1" / "model.onnx").exists()
    assert dvc_status_clean(paths.root)
    assert any((paths.root / ".dvc-remote").rglob("*"))  # pushed to the project-local remote

    # nothing new: the flow says so and does nothing else
    champion_bytes = _sha(champion / "model.onnx")
    assert retrain_flow(root=root) == {"action": "nothing-new", "champion_version": 1}
    import pandas as pd

    first_keys = set(pd.read_parquet(paths.manifest)["sha256"])

    # new labelled images: only they are extracted; the challenger is promoted as version 2
    n_new = 0
    for f in sorted(later.rglob("*.png")):
        dest = paths.raw / f.relative_to(later)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest)
        n_new += 1
    second = retrain_flow(root=root)
    import pandas as pd

    manifest = pd.read_parquet(paths.manifest)
    usable_new = manifest["path"].str.contains("|".join(CLASSES)) & ~manifest["sha256"].isin(first_keys)
    assert second["changes"]["new"] == n_new
    assert second["extracted"] == int(usable_new.sum()) > 0  # only the new images (minus rejected ones) ran
    assert second["action"] == "promoted" and second["champion_version"] == 2
    assert (paths.models / "serving" / "triton" / "headstart" / "2" / "model.onnx").exists()
    assert _sha(champion / "model.onnx") != champion_bytes

    # a harmful batch (new images with shuffled labels): rejected, champion untouched
    write_overrides(["retrain.tolerance=0.0"], paths.root / "params.yaml")
    champion_bytes = _sha(champion / "model.onnx")
    rng = np.random.default_rng(0)
    others = [f for c in ("people", "tools", "plants", "buildings") for f in sorted((clipart_raw / c).rglob("*.png"))]
    for i, f in enumerate(others[:150]):
        label = CLASSES[rng.integers(len(CLASSES))]
        dest = paths.raw / label / f"noisy_{i:03d}{f.suffix}"
        shutil.copy(f, dest)
    third = retrain_flow(root=root)
    assert third["action"] == "rejected", third["reason"]
    assert third["champion_version"] == 2 and _sha(champion / "model.onnx") == champion_bytes
    kept = sorted((paths.models / "rejected").iterdir())
    assert len(kept) == 1 and json.loads((kept[0] / "reason.json").read_text())["reason"] == third["reason"]
    assert (kept[0] / "model.onnx").exists()


def test_dvc_push_then_pull_restores_the_same_model(retrain_project):
    paths, _ = retrain_project
    root = paths.root
    if not paths.onnx.exists():
        pytest.skip("needs the lifecycle test's outputs")
    run([sys.executable, "-m", "dvc", "push", "-q"], root)
    before = _sha(paths.onnx)
    shutil.rmtree(root / ".dvc" / "cache")
    paths.onnx.unlink()
    shutil.rmtree(paths.features)
    run([sys.executable, "-m", "dvc", "pull", "-q"], root)
    assert _sha(paths.onnx) == before
    assert any(paths.features.rglob("shard-*.npy"))
    assert dvc_status_clean(root)
