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
    shutil.copy(good, raw / "animals" / "copy_of_animal.png")  # exact duplicate, same class (other: label conflict)
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
    assert list(manifest.columns) == ["path", "label", "split", "sha256", "width", "height", "group", "text"]
    assert manifest["text"].isna().all()  # images carry no text
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
    with pytest.raises(UserError, match="label 'b' appears in val but has no train samples"):
        run_ingest(project_params(paths), paths)


def test_same_bytes_under_two_labels_are_both_rejected_as_a_label_conflict(tmp_path, clipart_raw):
    raw = _small_raw(clipart_raw, tmp_path / "src")
    twin = next(iter(sorted((raw / "animals").rglob("*.png"))))
    shutil.copy(twin, raw / "food" / "twin.png")
    paths = make_project(tmp_path / "proj", raw)
    run_ingest(project_params(paths), paths)
    rej = pd.read_csv(paths.rejected).set_index("path")
    a, b = f"data/raw/{twin.relative_to(raw).as_posix()}", "data/raw/food/twin.png"
    assert rej.loc[a, "reason"] == f"label conflict: same content as {b}, labelled 'food'"
    assert rej.loc[b, "reason"] == f"label conflict: same content as {a}, labelled 'animals'"
    assert not set(pd.read_parquet(paths.manifest)["path"]) & {a, b}


def test_an_empty_class_folder_and_a_class_too_small_for_every_split_are_named(tmp_path, clipart_raw, capfd):
    raw = _small_raw(clipart_raw, tmp_path / "src")
    (raw / "ghosts").mkdir()
    (raw / "lonely").mkdir()
    shutil.copy(next(iter(sorted((clipart_raw / "people").rglob("*.png")))), raw / "lonely" / "only.png")
    paths = make_project(tmp_path / "proj", raw)
    summary = run_ingest(project_params(paths), paths)
    err = capfd.readouterr().err
    assert "class folder 'ghosts'" in err and "is empty" in err
    assert "class 'lonely' has only 1 sample(s) (1 group(s)): 1 in train, none in val or test" in err
    assert "ghosts" not in summary.classes and summary.per_class["lonely"] == 1


def test_an_unreadable_previous_manifest_stops_ingest_instead_of_redrawing_splits(tmp_path, clipart_raw):
    paths = make_project(tmp_path / "proj", _small_raw(clipart_raw, tmp_path / "src"))
    run_ingest(project_params(paths), paths)
    paths.manifest.write_bytes(paths.manifest.read_bytes()[:100])  # truncated
    damaged = paths.manifest.read_bytes()
    with pytest.raises(UserError, match=r"manifest.parquet cannot be read .*restore it .*or delete it") as exc:
        run_ingest(project_params(paths), paths)
    assert "\n" not in str(exc.value) and paths.manifest.read_bytes() == damaged


def test_a_rejected_file_fixed_in_place_and_a_relabelled_csv_row_are_changes(tmp_path, clipart_raw):
    from tasks.dataset.changes import detect_changes
    from tasks.modality.registry import modality_for

    files = sorted(clipart_raw.rglob("*.png"))
    keep = [f for f in files if f.parent.name in ("animals", "food")][:40]
    data = tmp_path / "data"
    data.mkdir()
    rows = []
    for i, f in enumerate(keep):
        shutil.copy(f, data / f"{i:03d}.png")
        rows.append((f"{i:03d}.png", f.relative_to(clipart_raw).parts[0]))
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    rows.append(("broken.png", "food"))
    csv = data / "labels.csv"
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(csv, index=False)
    paths = make_project(tmp_path / "proj", None, [f"ingest.source={csv}"])
    params = project_params(paths)
    run_ingest(params, paths)
    assert not detect_changes(params, paths, modality_for(params.backbone)).any
    shutil.copy(keep[0], data / "broken.png")  # the broken file, fixed in place
    df = pd.read_csv(csv)
    df.loc[1, "label"] = "animals" if df.loc[1, "label"] == "food" else "food"  # one row relabelled
    df.to_csv(csv, index=False)
    changes = detect_changes(params, paths, modality_for(params.backbone))
    assert sorted(Path(p).name for p in changes.changed) == ["001.png", "broken.png"] and not changes.new


def test_every_decode_enforces_the_pixel_limit_and_pillows_own_guard_stays_on(tmp_path):
    from PIL import Image as PILImage

    from tasks.dataset.images import TooLarge, load_checked, load_uint8

    big = tmp_path / "big.png"
    PILImage.new("RGB", (2000, 1500)).save(big)  # 3 MP
    with pytest.raises(TooLarge, match=r"too large: 2000x1500 = 3 MP > limit 1 MP"):
        load_uint8(big, 64, "pad", max_pixels=1_000_000)
    assert load_checked(big, 64, "pad", 1_000_000) == (None, "too large: 2000x1500 = 3 MP > limit 1 MP "
                                                            "(ingest.max_pixels)")
    assert load_uint8(big, 64, "pad").shape == (64, 64, 3)  # within the default limit
    assert PILImage.MAX_IMAGE_PIXELS is not None  # importing headstart no longer turns Pillow's bomb guard off


def test_ingest_reads_only_regular_files_within_the_size_limit_and_no_link_out_of_the_source(tmp_path, clipart_raw):
    import os

    raw = _small_raw(clipart_raw, tmp_path / "src")
    os.mkfifo(raw / "food" / "pipe.png")  # reading it would block forever
    outside = tmp_path / "elsewhere.png"
    shutil.copy(next(iter(sorted((clipart_raw / "people").rglob("*.png")))), outside)
    (raw / "food" / "link.png").symlink_to(outside)
    biggest = max((raw / "tools").rglob("*.png"), key=lambda f: f.stat().st_size)
    paths = make_project(tmp_path / "proj", raw, [f"ingest.max_file_bytes={biggest.stat().st_size - 1}"])
    run_ingest(project_params(paths), paths)
    reasons = {Path(p).name: r for p, r in pd.read_csv(paths.rejected).set_index("path")["reason"].items()}
    assert reasons["pipe.png"].startswith("not a regular file")
    assert reasons["link.png"] == f"a link out of the source folder (to {outside}): not followed"
    assert reasons[biggest.name].startswith(f"too big: {biggest.stat().st_size:,} bytes")

    csv = tmp_path / "list.csv"  # a CSV may name anything: a device is rejected, not read
    pd.DataFrame({"path": ["/dev/zero"] + [str(f) for f in sorted(raw.rglob("*.png"))
                                           if f.name not in ("pipe.png", "link.png")],
                  "label": ["food"] + [f.parent.name for f in sorted(raw.rglob("*.png"))
                                       if f.name not in ("pipe.png", "link.png")]}).to_csv(csv, index=False)
    paths = make_project(tmp_path / "proj2", None, [f"ingest.source={csv}"])
    run_ingest(project_params(paths), paths)
    rej = pd.read_csv(paths.rejected).set_index("path")["reason"]
    assert rej["/dev/zero"] == "a special file under /dev (/dev/zero), not data: not read"


def test_a_damaged_hash_cache_is_reported_and_only_costs_re_hashing(tmp_path, clipart_raw, capfd):
    paths = make_project(tmp_path / "proj", clipart_raw)
    params = project_params(paths)
    run_ingest(params, paths)
    manifest = pd.read_parquet(paths.manifest)
    paths.hashes.write_bytes(b"PAR1 not a parquet file")
    capfd.readouterr()
    run_ingest(params, paths)
    assert f"warning: {paths.hashes} cannot be read" in capfd.readouterr().err
    pd.testing.assert_frame_equal(pd.read_parquet(paths.manifest), manifest)  # every file hashed again, same keys
    assert len(pd.read_parquet(paths.hashes)) == len(manifest) + len(pd.read_csv(paths.rejected))


def _tiny_images(folder: Path, n: int = 6, seed: int = 0) -> None:
    """`n` distinct 8x8 PNGs in `folder`."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"img_{seed}_{i}.png")


def test_class_names_that_cannot_travel_stop_ingest_with_one_line_naming_the_folder_or_row(tmp_path):
    """A class "line\\nbreak" would be two lines of labels.txt and shift every later class at serving: rejected."""
    import os

    cases = {"newline": ("line\nbreak", r"class name 'line\\nbreak' \(folder .*/line\\nbreak\) holds a line break"),
             "not utf-8": (os.fsdecode(b"caf\xe9"), r"class name 'caf\\xe9' \(folder .*/caf\\xe9\) is not valid UTF-8"),
             "case": ("Ants", r"class names 'Ants' \(folder .*/Ants\) and 'ants' \(folder .*/ants\) differ only by case")}
    for case, (name, message) in cases.items():
        raw = tmp_path / case / "src"
        _tiny_images(raw / "ants", seed=1)
        _tiny_images(raw / "bees", seed=2)
        _tiny_images(Path(os.fsdecode(os.fsencode(raw)) + "/" + name), seed=3)
        paths = make_project(tmp_path / case / "proj", None, [f"ingest.source={raw}"])
        with pytest.raises(UserError, match=message) as exc:
            run_ingest(project_params(paths), paths)
        assert "\n" not in str(exc.value), case
        assert not paths.manifest.exists(), case  # nothing written

    csv = tmp_path / "list.csv"  # a CSV label is a class name too: the row is named
    files = sorted((tmp_path / "newline" / "src").glob("[ab]*/*.png"))
    pd.DataFrame({"path": [str(f) for f in files],
                  "label": [f.parent.name if i != 3 else "killer\nbees" for i, f in enumerate(files)]}
                 ).to_csv(csv, index=False)
    paths = make_project(tmp_path / "csv_proj", None, [f"ingest.source={csv}"])
    with pytest.raises(UserError, match=rf"class name 'killer\\nbees' \({csv}:5\) holds a line break or control character"):
        run_ingest(project_params(paths), paths)


def test_hostile_files_in_a_folder_and_in_a_csv_are_rejected_with_reasons_and_never_read(tmp_path):
    """A device, a FIFO, /dev/stdin, a /proc file, a NUL byte, a not-UTF-8 name, a link to a folder: each rejected
    with its reason in rejected.csv, none read (reading /dev/zero or the FIFO would never end), the run finishes."""
    import os
    import stat

    raw = tmp_path / "src"
    _tiny_images(raw / "ants", seed=1)
    _tiny_images(raw / "bees", seed=2)
    os.mkfifo(raw / "ants" / "pipe.png")
    try:
        os.mknod(raw / "ants" / "zero.png", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # a /dev/zero of its own
        device = True
    except PermissionError:  # no CAP_MKNOD: the CSV's /dev/zero below still checks a device
        device = False
    (raw / "bees" / os.fsdecode(b"caf\xe9.png")).write_bytes((raw / "bees" / "img_2_0.png").read_bytes())
    (raw / "bees" / "more").symlink_to(raw / "ants")  # inside the source, but a folder: not walked twice
    paths = make_project(tmp_path / "proj", None, [f"ingest.source={raw}"])
    summary = run_ingest(project_params(paths), paths)
    rej = pd.read_csv(paths.rejected)
    reasons = dict(zip(rej["path"].map(lambda p: p.rsplit("/", 1)[-1]), rej["reason"]))
    assert reasons["pipe.png"] == "not a regular file (a FIFO): not read"
    if device:
        assert reasons["zero.png"] == "not a regular file (a character device): not read"
    assert reasons["caf\\xe9.png"].startswith("the file name is not valid UTF-8")
    assert reasons["more"] == f"a link to a folder (to {raw / 'ants'}): not followed"
    assert summary.n_usable == 12

    status = tmp_path / "status.png"
    status.symlink_to("/proc/self/status")  # a regular-looking name that leads into /proc
    good = sorted(str(f) for f in raw.glob("*/img_*.png"))
    csv = tmp_path / "list.csv"
    hostile = ["/dev/zero", "/dev/stdin", "/proc/self/environ", str(status), str(raw / "ants" / "pipe.png"),
               "/tmp/with\x00nul.png"]
    pd.DataFrame({"path": good + hostile, "label": [p.split("/")[-2] for p in good] + ["ants"] * len(hostile)}
                 ).to_csv(csv, index=False)
    paths = make_project(tmp_path / "proj2", None, [f"ingest.source={csv}"])
    summary = run_ingest(project_params(paths), paths)
    reasons = pd.read_csv(paths.rejected).set_index("path")["reason"].to_dict()
    assert reasons["/dev/zero"] == "a special file under /dev (/dev/zero), not data: not read"
    assert reasons["/dev/stdin"] == "a special file under /dev (/dev/stdin), not data: not read"
    assert reasons["/proc/self/environ"].startswith("a special file under /proc (")
    assert reasons[str(status)].startswith("a special file under /proc (/proc/")  # where the link leads
    assert reasons[str(raw / "ants" / "pipe.png")] == "not a regular file (a FIFO): not read"
    assert reasons["/tmp/with\\x00nul.png"] == "the path holds a NUL byte: not a file name"
    assert summary.n_usable == 12

    latin = tmp_path / "latin.csv"  # bytes that are not UTF-8 in a CSV's path: one line, no traceback
    latin.write_bytes(b"path,label\n" + os.fsencode(good[0]) + b"\xff,ants\n")
    paths = make_project(tmp_path / "proj3", None, [f"ingest.source={latin}"])
    with pytest.raises(UserError, match=rf"^{latin}: cannot read as CSV \('utf-8' codec can't decode") as exc:
        run_ingest(project_params(paths), paths)
    assert "\n" not in str(exc.value)


def test_a_device_a_fifo_or_a_nul_byte_as_the_source_is_a_one_line_error_before_anything_is_read(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import venv_env

    paths = make_project(tmp_path / "proj", None)
    ran = subprocess.run([sys.executable, "-m", "tasks.ingest", "-S", "ingest.source=/dev/zero"], cwd=paths.root,
                         env=venv_env() | {"HEADSTART_ROOT": str(paths.root)}, capture_output=True, text=True,
                         timeout=120)  # reading /dev/zero as a CSV would never end
    assert ran.returncode == 2
    assert ran.stderr.strip() == ("error: ingest.source: '/dev/zero' is a special file under /dev (/dev/zero), not "
                                  "data: not read; give a folder or a CSV file")
    fifo = tmp_path / "list.csv"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match=rf"^ingest.source: '{fifo}' is a FIFO, not a folder or a CSV file$"):
        run_ingest(project_params(paths, [f"ingest.source={fifo}"]), paths)
    from tasks.core.params import IngestParams
    from tasks.dataset.sources import resolve_source

    with pytest.raises(UserError, match=r"^ingest.source: 'data/raw\\x00' holds a NUL byte"):  # "\\0" in YAML
        resolve_source(IngestParams(source="data/raw\x00"), paths.root)
    assert not paths.manifest.exists()


def test_a_linked_class_folder_with_no_usable_images_stops_with_a_rejected_csv_saying_why(tmp_path):
    raw = tmp_path / "src"
    _tiny_images(raw / "ants", seed=1)
    _tiny_images(raw / "bees", seed=2)
    _tiny_images(tmp_path / "elsewhere" / "wasps", seed=3)
    (raw / "wasps").symlink_to(tmp_path / "elsewhere" / "wasps")  # not walked: a link could lead anywhere
    paths = make_project(tmp_path / "proj", None, [f"ingest.source={raw}"])
    with pytest.raises(UserError, match=r"^class 'wasps' \(.*/wasps\) has no usable images: 1 rejected as 'a class "
                                        r"folder linked out of the source folder' \(data/prepared/rejected.csv") as exc:
        run_ingest(project_params(paths), paths)
    assert "\n" not in str(exc.value)
    rej = pd.read_csv(paths.rejected)
    assert rej.to_dict("records")[0] | {"size": 0, "mtime_ns": 0} == {
        "path": f"{raw}/wasps", "label": "wasps", "size": 0, "mtime_ns": 0,
        "reason": f"a class folder linked out of the source folder (to {tmp_path}/elsewhere/wasps): not followed; copy "
                  f"the files in instead"}
    assert not paths.manifest.exists()  # the manifest is not written for a run that stopped
