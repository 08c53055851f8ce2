"""A full disk: one line naming the file that could not be written and the space it needed, exit 2, nothing
half-written, and a rerun with space resumes with what was committed before.

Two kinds of test: a real small tmpfs mounted over the output folder in a private mount namespace (`unshare`, which
needs no root with user namespaces), skipped where it cannot be mounted; and writers patched to fail as a full disk
fails (ENOSPC, numpy's short write, pyarrow's message), which always run.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tasks.core.disk_space import DiskFull
from tasks.core.errors import UserError
from tasks.core.files import atomic_dir, atomic_path, atomic_write_text
from tests.conftest import make_project, venv_env


def _images(folder: Path, n: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{folder.name}_{seed}_{i}.png")


def _unshare() -> list[str] | None:
    """The command prefix that runs a shell in a private mount namespace where tmpfs can be mounted; None if none."""
    if shutil.which("unshare") is None:
        return None
    for prefix in (["unshare", "--mount"], ["unshare", "--user", "--map-root-user", "--mount"]):
        probe = subprocess.run([*prefix, "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=8k tmpfs $d"],
                               capture_output=True, timeout=30)
        if probe.returncode == 0:
            return prefix
    return None


def _in_tmpfs(folder: Path, script: str, env: dict) -> subprocess.CompletedProcess:
    """Run `script` (sh) with a fresh tmpfs mounted over `folder` (its current files copied in), in a private mount
    namespace: nothing outside the script sees the mount. Skips the test where no tmpfs can be mounted."""
    prefix = _unshare()
    if prefix is None:
        pytest.skip("no tmpfs can be mounted here (unshare/user namespaces unavailable); the patched-writer tests ran")
    keep = folder.with_name(folder.name + ".before")
    shutil.copytree(folder, keep)
    setup = f"set -e; mount -t tmpfs -o size=16m tmpfs '{folder}'; cp -a '{keep}/.' '{folder}/'; set +e\n"
    return subprocess.run([*prefix, "sh", "-c", setup + script], capture_output=True, text=True, env=env, timeout=300)


def _fill_leaving(folder: str, free_kb: int) -> str:
    """sh: a filler file that leaves `free_kb` KiB free on `folder`'s filesystem."""
    return (f"avail=$(df -k --output=avail '{folder}' | tail -1); "
            f"fallocate -l $(( (avail - {free_kb}) * 1024 )) '{folder}/filler'\n")


def _stage(module: str, *sets: str) -> str:
    return " ".join([sys.executable, "-m", module, *(f"-S {s}" for s in sets)])


def test_a_full_disk_in_an_atomic_write_is_one_line_naming_the_file_and_leaves_the_old_file(tmp_path, monkeypatch):
    """Patched writers (no tmpfs needed): each way a full disk shows up is one DiskFull naming the file."""
    dest = tmp_path / "out" / "manifest.parquet"
    atomic_write_text(dest, "old")

    def enospc(tmp: Path) -> None:
        tmp.write_bytes(b"x" * 5000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def short_write(tmp: Path) -> None:  # numpy's tofile on a full disk: no errno, only counts
        tmp.write_bytes(b"x" * 128 + b"y" * 185312)
        raise OSError("327680 requested and 185312 written")

    def pyarrow_style(tmp: Path) -> None:
        raise OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr("tasks.core.disk_space._free_bytes", lambda folder: 0)  # the short write is judged by it
    for writer, needs, said in ((enospc, None, "more than 5,000"), (short_write, None, "at least 327,808"),
                                (pyarrow_style, 4096, "4,096"), (enospc, 61568, "61,568")):
        with pytest.raises(DiskFull) as exc:
            with atomic_path(dest, needs=needs) as tmp:
                writer(tmp)
        message = str(exc.value)
        assert isinstance(exc.value, UserError) and "\n" not in message
        assert message.startswith(f"no space left on device: could not write {dest} (it needs {said} bytes, 0 bytes "
                                  f"are free on its filesystem)")
        assert dest.read_text() == "old" and sorted(p.name for p in dest.parent.iterdir()) == ["manifest.parquet"]

    with pytest.raises(DiskFull, match=r"could not write .*triton/model \(it needs more than 5,000 bytes"):
        with atomic_dir(tmp_path / "triton" / "model") as folder:
            enospc(folder / "model.onnx")
    assert list((tmp_path / "triton").iterdir()) == []  # no temp folder left behind

    with pytest.raises(ValueError):  # anything else is not a full disk, and not disguised as one
        with atomic_path(dest) as tmp:
            raise ValueError("a bug")


def test_ingest_on_a_full_disk_says_which_file_keeps_the_old_manifest_and_a_rerun_with_space_resumes(tmp_path):
    """A real tmpfs over data/prepared (skipped where none can be mounted)."""
    raw = tmp_path / "src"
    for c, seed in (("ants", 1), ("bees", 2)):
        _images(raw / c, 6, seed)
    paths = make_project(tmp_path / "proj", raw)
    env = venv_env() | {"HEADSTART_ROOT": str(paths.root)}
    done = subprocess.run([sys.executable, "-m", "tasks.ingest"], cwd=paths.root, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before = paths.manifest.read_bytes()
    for c, seed in (("ants", 3), ("bees", 4)):
        _images(paths.raw / c, 40, seed)  # the next ingest writes a larger manifest

    out = tmp_path / "seen"
    prepared = paths.manifest.parent
    ran = _in_tmpfs(prepared, f"cd '{paths.root}'\n" + _fill_leaving(str(prepared), 4)
                    + f"{_stage('tasks.ingest')}; echo \"rc=$?\"; rm '{prepared}/filler'\n"
                    + f"mkdir -p '{out}/full' && cp -a '{prepared}/.' '{out}/full/'\n"
                    + f"{_stage('tasks.ingest')}; echo \"rc=$?\"\n"
                    + f"mkdir -p '{out}/space' && cp -a '{prepared}/.' '{out}/space/'\n", env)
    full_rc, space_rc = [line for line in ran.stdout.splitlines() if line.startswith("rc=")]
    errors = [line for line in ran.stderr.splitlines() if line.startswith("error:")]
    assert full_rc == "rc=2", ran.stderr[-2000:]
    assert len(errors) == 1 and "Traceback" not in ran.stderr, ran.stderr[-2000:]
    assert errors[0].startswith(f"error: no space left on device: could not write {prepared}/")
    assert "bytes" in errors[0] and "free" in errors[0]
    assert (out / "full" / "manifest.parquet").read_bytes() == before  # the old manifest, intact
    assert not [p.name for p in (out / "full").iterdir() if p.name.startswith(".")]  # no temp file left
    assert space_rc == "rc=0", ran.stderr[-2000:]
    assert len(pd.read_parquet(out / "space" / "manifest.parquet")) == 2 * 46  # the rerun with space finished


@pytest.mark.slow
def test_features_on_a_full_disk_keep_the_committed_shards_and_a_rerun_with_space_resumes(tmp_path, built_project):
    """A real tmpfs over data/features (skipped where none can be mounted). The backbone graph is copied from the
    session's built project (same fingerprint), so only rows are computed here."""
    raw = tmp_path / "src"
    for c, seed in (("ants", 1), ("bees", 2)):
        _images(raw / c, 6, seed)
    paths = make_project(tmp_path / "proj", raw, ["features.batch_size=4", "features.shard_size=4"])
    env = venv_env() | {"HEADSTART_ROOT": str(paths.root)}
    done = subprocess.run([sys.executable, "-m", "tasks.ingest"], cwd=paths.root, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    built = next(p for p in built_project[0].features.iterdir() if (p / "backbone.onnx").exists())
    store = paths.features / built.name
    store.mkdir(parents=True)
    for name in ("backbone.onnx", "backbone.parity.json", "recipe.json"):
        shutil.copy2(built / name, store / name)

    out = tmp_path / "seen"
    # room for one shard of 4 rows (20 KiB of floats, plus its keys and provenance), not for the second
    ran = _in_tmpfs(paths.features, f"cd '{paths.root}'\n" + _fill_leaving(str(paths.features), 40)
                    + f"{_stage('tasks.features')}; echo \"rc=$?\"; rm '{paths.features}/filler'\n"
                    + f"mkdir -p '{out}/full' && cp -a '{store}/.' '{out}/full/'\n"
                    + f"{_stage('tasks.features')}; echo \"rc=$?\"\n"
                    + f"mkdir -p '{out}/space' && cp -a '{store}/.' '{out}/space/'\n", env)
    full_rc, space_rc = [line for line in ran.stdout.splitlines() if line.startswith("rc=")]
    errors = [line for line in ran.stderr.splitlines() if line.startswith("error:")]
    assert full_rc == "rc=2" and len(errors) == 1 and "Traceback" not in ran.stderr, ran.stderr[-2000:]
    assert errors[0].startswith(f"error: no space left on device: could not write {store}/shard-000001.npy (it "
                                f"needs {4 * 4 * 1280 + 128:,} bytes")
    committed = sorted(p.name for p in (out / "full").glob("shard-*"))
    assert committed == ["shard-000000.keys.json", "shard-000000.npy", "shard-000000.provenance.json"]
    assert not [p.name for p in (out / "full").iterdir() if p.name.startswith(".")]  # nothing half-written
    assert space_rc == "rc=0", ran.stderr[-2000:]
    assert "4 cache hits, 8 extracted" in ran.stderr  # the rerun resumed: the committed shard was kept
    assert (out / "space" / "shard-000000.npy").read_bytes() == (out / "full" / "shard-000000.npy").read_bytes()
    assert len(list((out / "space").glob("shard-*.keys.json"))) == 3
