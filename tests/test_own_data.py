"""The user's own data, anywhere on disk: a folder or a CSV outside the project, through the Prefect flow and through
`dvc repro` / `dvc exp run`, leaving DVC's record clean and tracking the real source."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
from ruamel.yaml import YAML

from tests.conftest import dvc_status_clean, make_project, run

pytestmark = pytest.mark.slow  # every test here runs the whole pipeline through DVC or a Prefect flow


def _committed_project(dest, **kwargs):
    paths = make_project(dest, None, dvc=True, **kwargs)
    run(["git", "add", "-A"], paths.root)
    run(["git", "commit", "-qm", "project without data/raw"], paths.root)
    return paths


def test_flow_on_a_folder_outside_the_project_tracks_it_and_leaves_dvc_clean(tmp_path, clipart_raw, prefect_harness):
    from flows.train import train_flow

    paths = _committed_project(tmp_path / "proj")
    assert not paths.raw.exists() and not clipart_raw.is_relative_to(paths.root)
    results = train_flow(overrides=[f"ingest.source={clipart_raw}"], root=str(paths.root))
    assert results["evaluate"]["accuracy"] > 0.5
    assert dvc_status_clean(paths.root)
    lock = YAML(typ="safe").load((paths.root / "dvc.lock").read_text())
    assert lock["stages"]["ingest"]["deps"][0]["path"] == str(clipart_raw)  # DVC knows the real source
    again = run([sys.executable, "-m", "dvc", "repro"], paths.root)
    assert "Running stage" not in again.stdout

    new = clipart_raw / "food" / "zz_new.png"  # a new file in the outside folder: DVC sees the source changed
    try:
        new.write_bytes(next(iter(sorted((clipart_raw / "food").rglob("*.png")))).read_bytes() + b"\x00")
        assert not dvc_status_clean(paths.root)
    finally:
        new.unlink(missing_ok=True)


def test_dvc_exp_run_on_a_csv_outside_the_project(tmp_path, clipart_raw):
    paths = _committed_project(tmp_path / "proj")
    files = sorted(clipart_raw.rglob("*.png"))
    csv = tmp_path / "elsewhere" / "labels.csv"
    csv.parent.mkdir()
    pd.DataFrame({"path": [str(f) for f in files], "label": [f.relative_to(clipart_raw).parts[0] for f in files]}
                 ).to_csv(csv, index=False)
    proc = run([sys.executable, "-m", "dvc", "exp", "run", "-S", f"ingest.source={csv}"], paths.root)
    assert "Running stage 'evaluate'" in proc.stdout
    manifest, rejected = pd.read_parquet(paths.manifest), pd.read_csv(paths.rejected)
    assert len(manifest) + len(rejected) == len(files) and len(manifest) > 300
    assert set(manifest["label"]) == {f.relative_to(clipart_raw).parts[0] for f in files}
    assert dvc_status_clean(paths.root)
    lock = YAML(typ="safe").load((paths.root / "dvc.lock").read_text())
    assert lock["stages"]["ingest"]["deps"][0]["path"] == str(csv)


def test_user_errors_under_headstart_run_are_one_line_and_leave_params_alone(tmp_path, clipart_raw):
    paths = make_project(tmp_path / "proj", clipart_raw)
    params_before = (paths.root / "params.yaml").read_text()
    bad_source = run([sys.executable, "-m", "flows.cli", "run", "--no-commit", "-S", "ingest.source=/nonexistent/x"],
                     paths.root, check=False)
    assert bad_source.returncode == 2 and "Traceback" not in bad_source.stderr + bad_source.stdout
    assert bad_source.stderr.strip().splitlines()[-1] == (
        "error: ingest.source: '/nonexistent/x' does not exist (put images in <source>/<class>/ or give a CSV)")
    assert (paths.root / "params.yaml").read_text() == params_before  # checked before -S is written

    (paths.raw / "ghosts").mkdir()  # a class with only a broken file: ingest fails inside the Prefect flow
    (paths.raw / "ghosts" / "broken.png").write_bytes(b"\x89PNG\r\n")
    inside = run([sys.executable, "-m", "flows.cli", "run", "--no-commit"], paths.root, check=False)
    assert inside.returncode == 2 and "Traceback" not in inside.stderr + inside.stdout
    errors = [line for line in inside.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: class 'ghosts'")
