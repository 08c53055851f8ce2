"""Promotion as a transaction: killed with SIGKILL at each of its phases, run twice at once, its candidate replaced
while the gate judges it. Real `headstart promote` processes, real ONNX Runtime, DVC and git."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, private_copy, run

POINTERS = ["models/registry.dvc", "models/serving.dvc"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _recorded_project(built_project, dest: Path, test_per_class: int = 2):
    """A private copy of the built project made a git + DVC repository like `make_project(dvc=True)` does, with
    `test_per_class` test images per class left in its manifest: every gate then takes ~1 s, not ~5 (the transaction
    does not depend on how many images the gate scores)."""
    import pandas as pd

    paths = private_copy(built_project[0], dest)
    manifest = pd.read_parquet(paths.manifest)
    test = manifest["split"].eq("test")
    keep = ~test
    keep[test] = manifest[test].groupby("label").cumcount().lt(test_per_class)
    paths.manifest.unlink()  # a hard link to the built project's manifest: a new file, never a write into it
    manifest[keep].to_parquet(paths.manifest)
    run(["git", "init", "-q"], dest)
    run(["git", "config", "user.email", "test@example.invalid"], dest)
    run(["git", "config", "user.name", "test"], dest)
    run([sys.executable, "-m", "dvc", "init", "-q"], dest)
    shutil.copy(REPO / ".dvc" / "config", dest / ".dvc" / "config")
    shutil.copy(REPO / ".gitignore", dest / ".gitignore")
    shutil.copy(REPO / "models" / ".gitignore", dest / "models" / ".gitignore")
    return paths


def _restamp(paths, tag: str) -> str:
    """Give the candidate new bytes and the same predictions (a metadata entry added), as a retrain that changed
    nothing would; returns its sha256."""
    import onnx

    model = onnx.load(str(paths.onnx))
    model.metadata_props.add(key="test.tag", value=tag)
    tmp = paths.onnx.with_name(".restamp.onnx")
    onnx.save(model, str(tmp))
    os.replace(tmp, paths.onnx)
    return _sha(paths.onnx)


def _promote_in(root: str, crash_at: str, log: str | None) -> None:
    """`headstart promote` in `root`, in this (forked) process, which kills itself at the phase `crash_at` (if any)
    and writes its output to `log` (if given)."""
    os.chdir(root)
    os.environ["HEADSTART_ROOT"] = root
    os.environ["HEADSTART_CRASH_AT"] = crash_at
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = sys.stderr = open(fd, "w", buffering=1)
    from flows.cli import main

    main(["promote"])


def _start_promotion(paths, crash_at: str = "", log: Path | None = None):
    """Start `headstart promote` in a process of its own. It is forked from a server that imported the CLI once (a
    fresh interpreter spends ~4 s importing it)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["flows.cli", "flows.dvc_sync", "tasks.registry.promotion"])
    proc = ctx.Process(target=_promote_in, args=(str(paths.root), crash_at, log and str(log)))
    proc.start()
    return proc


def _killed_promotion(paths, crash_at: str) -> int | None:
    """Run `headstart promote` in a process of its own that SIGKILLs itself at `crash_at`; its exit code."""
    proc = _start_promotion(paths, crash_at)
    proc.join(600)
    return proc.exitcode


def _cli_promote(paths, monkeypatch, capsys) -> str:
    """`headstart promote` in the project, in this process; what it printed."""
    from flows.cli import main

    monkeypatch.chdir(paths.root)
    monkeypatch.setenv("HEADSTART_ROOT", str(paths.root))
    monkeypatch.delenv("HEADSTART_CRASH_AT", raising=False)
    main(["promote"])
    out = capsys.readouterr()
    return out.out + out.err


def _tree(folder: Path) -> dict[str, str]:
    """Every entry under `folder` (hidden ones too): sha256 of a file, "dir" for a folder."""
    if not folder.exists():
        return {}
    return {p.relative_to(folder).as_posix(): "dir" if p.is_dir() else _sha(p) for p in sorted(folder.rglob("*"))}


def _record_is_complete(paths) -> bool:
    """`dvc status` of the two pointers is clean and git HEAD holds them as they are."""
    from flows.dvc_sync import dvc_command

    dvc_clean = dvc_command(paths.root, "status", "--json", *POINTERS).strip() in ("{}", "")
    git_clean = not run(["git", "status", "--porcelain", "--", *POINTERS], paths.root).stdout.strip()
    return dvc_clean and git_clean


def _head_subject(paths) -> str:
    return run(["git", "log", "-1", "--format=%s"], paths.root).stdout.strip()


# every phase of tasks.registry.transaction at which a promotion can die, in order; from "pointer" on it committed
PHASES = ["snapshot", "judged", "version-staged", "version-published", "pointer", "deploy-staged", "deploy-swapped",
          "deployed", "dvc-added", "git-added"]
COMMITTED = PHASES[PHASES.index("pointer"):]
NEW_DEPLOY_SET = PHASES[PHASES.index("deploy-swapped"):]


def _assert_nothing_half_written(paths) -> None:
    """The registry holds its pointer and version folders, each committed one complete; the deploy repository holds
    model folders of complete versions; neither holds anything hidden or temporary."""
    from tasks.registry.champions import registry_dir, serving_dir, versions

    reg, serving = registry_dir(paths), serving_dir(paths)
    assert not [p for d in (reg, serving.parent) for p in d.rglob(".*")], "a temporary entry in a deployable folder"
    assert all(p.name == "champion.json" or p.name.startswith("v") for p in reg.iterdir())
    for folder in versions(paths).values():
        assert {"model.onnx", "labels.txt", "promotion.json", "metrics.json", "test_keys.json"} <= {
            p.name for p in folder.iterdir()}, folder
    for model in serving.iterdir():
        assert {"config.pbtxt", "labels.txt"} <= {p.name for p in model.iterdir()}
        assert all((v / "model.onnx").is_file() for v in model.iterdir() if v.is_dir())


@pytest.mark.slow
def test_a_promotion_killed_at_any_phase_leaves_the_old_or_the_new_set_and_the_rerun_records_it(
        built_project, tmp_path, monkeypatch, capsys):
    from tasks.registry.champions import champion_model, champion_version, rejected_dir, serving_dir

    paths = _recorded_project(built_project, tmp_path / "proj")
    assert "v0001 is the champion" in _cli_promote(paths, monkeypatch, capsys)
    for version, phase in enumerate(PHASES, start=2):
        old_set = _tree(serving_dir(paths))
        sha = _restamp(paths, phase)
        assert _killed_promotion(paths, phase) == -signal.SIGKILL, phase
        after_kill = _tree(serving_dir(paths))
        _assert_nothing_half_written(paths)
        assert champion_version(paths) == (version if phase in COMMITTED else version - 1), phase

        said = _cli_promote(paths, monkeypatch, capsys)  # the rerun
        assert champion_version(paths) == version and _sha(champion_model(paths)) == sha, (phase, said)
        new_set = _tree(serving_dir(paths))
        assert after_kill == (new_set if phase in NEW_DEPLOY_SET else old_set), phase  # one set or the other, whole
        assert sorted(new_set) == sorted([*old_set, f"headstart/{version}", f"headstart/{version}/model.onnx"])
        _assert_nothing_half_written(paths)
        assert _record_is_complete(paths) and _head_subject(paths) == f"headstart: promote v{version:04d}", phase
        assert not (paths.models / ".promotion").exists() and not (paths.models / ".record-pending.json").exists()
        if phase in COMMITTED:
            assert f"the candidate is the champion v{version:04d} already" in said
            assert f"completing the DVC/git record of v{version:04d}" in said, said
        else:
            assert f"v{version:04d} is the champion" in said
        if phase == "version-published":  # written, never committed: quarantined with a reason, then promoted anew
            assert "interrupted before the champion pointer moved" in said
            kept = [p for p in rejected_dir(paths).iterdir() if p.name.endswith(f"-v{version:04d}-uncommitted")]
            assert len(kept) == 1 and (kept[0] / "reason.json").exists() and _sha(kept[0] / "model.onnx") == sha


@pytest.mark.slow
def test_two_promotions_at_once_serialise_and_the_second_sees_the_first(built_project, tmp_path):
    from filelock import FileLock

    from tasks.registry.champions import champion_version, versions

    paths = _recorded_project(built_project, tmp_path / "proj")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    with FileLock(str(paths.models / ".registry.lock")):  # both start while the registry is busy, then race for it
        procs = [_start_promotion(paths, log=log) for log in logs]
        deadline = time.monotonic() + 300
        while not all(log.exists() and "waiting for it to finish" in log.read_text() for log in logs):
            assert time.monotonic() < deadline and all(p.is_alive() for p in procs), [
                log.read_text() for log in logs if log.exists()]
            time.sleep(0.1)
    for p in procs:
        p.join(600)
    outs = [log.read_text() for log in logs]
    assert [p.exitcode for p in procs] == [0, 0], outs
    assert sorted("the candidate is the champion v0001 already" in out for out in outs) == [False, True], outs
    assert list(versions(paths)) == [1] and champion_version(paths) == 1
    subjects = run(["git", "log", "--format=%s"], paths.root).stdout.split("\n")
    assert subjects.count("headstart: promote v0001") == 1 and _record_is_complete(paths)
    _assert_nothing_half_written(paths)


def test_a_candidate_replaced_while_the_gate_judges_it_is_never_registered(built_copy, monkeypatch):
    import tasks.registry.promotion as promotion
    from tasks.registry.champions import champion_model
    from tests.conftest import project_params

    judged = _sha(built_copy.onnx)
    real_score = promotion.score_models

    def swap_then_score(models, *args, **kwargs):  # the gate has started: someone overwrites the candidate
        built_copy.onnx.write_bytes(b"a deliberately broken model")
        return real_score(models, *args, **kwargs)

    monkeypatch.setattr(promotion, "score_models", swap_then_score)
    record = promotion.judge_and_publish(project_params(built_copy), built_copy)
    assert record["action"] == "promoted" and record["model_sha256"] == judged
    assert _sha(champion_model(built_copy)) == judged  # the bytes the gate judged, not the ones in models/ now
    stored = json.loads((champion_model(built_copy).parent / "promotion.json").read_text())
    assert stored["model_sha256"] == judged
    assert built_copy.onnx.read_bytes() == b"a deliberately broken model"  # the candidate itself is not ours to undo
