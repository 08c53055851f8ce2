"""Ingest: bad files are rejected with reasons (never fatal), splits are grouped, stratified and sticky."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tasks.core.errors import UserError
from tasks.ingest import run_ingest
from tests.conftest import make_project, project_params


def _small_raw(clipart_raw: Path, dest: Path, classes=("animals", "food", "tools"), n=12) -> Path:
    for c in classes:
        files = sorted((clipart_raw / c).rglob("*.png"))[:n]
        for f in files:
            t = dest / c / f.relative_to(clipart_raw / c)
            t.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, t)
    return dest


def test_bad_files_are_listed_with_reasons_and_the_run_finishes(tmp_path, clipart_raw):
    raw = _small_raw(clipart_raw, tmp_path / "src")
    good = sorted((raw / "animals").rglob("*.png"))[0]
    data = good.read_bytes()
    (raw / "animals" / "corrupt.png").write_bytes(data[: len(data) // 2])  # truncated real PNG
    (raw / "food" / "empty.png").write_bytes(b"")
    (raw / "food" / "notes.jpg").write_text("this is a text file, not a JPEG\n")
    Image.new("1", (7000, 6000)).save(raw / "tools" / "huge.png")  # 42 MP > the 40 MP default limit
    shutil.copy(good, raw / "food" / "copy_of_animal.png")  # exact duplicate, other class
    (raw / "tools" / "README.md").write_text("not an image")
    paths = make_project(tmp_path / "proj", raw)

    summary = run_ingest(project_params(paths), paths)

    rej = pd.read_csv(paths.rejected).set_index("path")
    reasons = {Path(p).name: r for p, r in rej["reason"].items()}
    assert reasons["corrupt.png"].startswith("truncated or corrupt")
    assert reasons["empty.png"] == "empty file (0 bytes)"
    assert reasons["notes.jpg"].startswith("not an image")
    assert reasons["huge.png"].startswith("too large: 7000x6000")
    assert reasons["README.md"].startswith("unsupported extension")
    dup_reason = reasons.get("copy_of_animal.png") or reasons[good.name]
    assert dup_reason.startswith("duplicate of")
    manifest = pd.read_parquet(paths.manifest)
    assert list(manifest.columns) == ["path", "label", "split", "sha256", "width", "height", "group"]
    assert manifest["sha256"].is_unique
    assert not set(manifest["path"].map(lambda p: Path(p).name)) & {"corrupt.png", "empty.png", "notes.jpg", "huge.png"}
    assert summary.n_usable == len(manifest) == 3 * 12
    assert (manifest["width"] > 0).all() and (manifest["height"] > 0).all()


def test_groups_never_straddle_splits_and_splits_are_stratified(built_project):
    paths, params, _ = built_project
    m = pd.read_parquet(paths.manifest)
    assert (m.groupby(["label", "group"])["split"].nunique() == 1).all()
    # the demo files come in variants: grouping must actually merge some of them
    assert m.groupby(["label", "group"]).size().max() > 1
    for label, rows in m.groupby("label"):
        share = rows["split"].value_counts(normalize=True)
        assert abs(share.get("train", 0) - 0.5) < 0.2, label
        assert share.get("test", 0) > 0.1, label


def test_splits_are_sticky_when_new_files_arrive_and_reproducible(tmp_path, clipart_raw):
    raw = _small_raw(clipart_raw, tmp_path / "src", n=30)
    paths = make_project(tmp_path / "proj", raw)
    params = project_params(paths)
    run_ingest(params, paths)
    before = pd.read_parquet(paths.manifest).set_index("sha256")["split"]
    # add new files (from classes' later images) and rename an old one
    for f in sorted((clipart_raw / "animals").rglob("*.png"))[30:40]:
        shutil.copy(f, paths.raw / "animals" / f"new_{f.name}")
    old = sorted((paths.raw / "food").rglob("*.png"))[0]
    old.rename(old.with_name("renamed_" + old.name))
    run_ingest(params, paths)
    after = pd.read_parquet(paths.manifest).set_index("sha256")["split"]
    common = before.index.intersection(after.index)
    assert len(common) == len(before)
    assert (before[common] == after[common]).all()
    assert len(after) > len(before)
    # same data + params, from scratch -> identical manifest
    fresh = [make_project(tmp_path / f"fresh{i}", paths.raw) for i in range(2)]
    for p in fresh:
        run_ingest(project_params(p), p)
    pd.testing.assert_frame_equal(pd.read_parquet(fresh[0].manifest), pd.read_parquet(fresh[1].manifest))


def test_empty_class_is_a_one_line_error(tmp_path, clipart_raw):
    raw = _small_raw(clipart_raw, tmp_path / "src")
    (raw / "ghosts").mkdir()
    (raw / "ghosts" / "broken.png").write_bytes(b"\x89PNG\r\n")
    paths = make_project(tmp_path / "proj", raw)
    with pytest.raises(UserError, match=r"class 'ghosts' \(.*ghosts\) has no usable images") as exc:
        run_ingest(project_params(paths), paths)
    assert "\n" not in str(exc.value)
    assert not paths.manifest.exists()  # nothing half-written


def test_csv_label_in_val_not_in_train_is_an_error(tmp_path, clipart_raw):
    files = sorted(clipart_raw.rglob("*.png"))[:6]
    rows = [(str(f), "a", "train") for f in files[:3]] + [(str(f), "b", "val") for f in files[3:]]
    csv = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(csv, index=False)
    paths = make_project(tmp_path / "proj", None, [f"ingest.source={csv}"])
    with pytest.raises(UserError, match="label 'b' appears in val but has no train images"):
        run_ingest(project_params(paths), paths)
