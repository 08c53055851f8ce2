"""Promotion as a transaction: one lock for the registry, recovery of whatever a killed promotion left, and the
DVC/git record completed even when the process that started it died.

A promotion (`tasks.registry.champions.publish`, under `promotion_transaction`) goes:

    1 the candidate is copied into the staging area and hashed     kill -> the copy is wiped by the next promotion
    2 the gate judges that copy
    3 the version folder is built in staging and renamed in        kill -> a version above the pointer: quarantined
    4 "record pending" is noted (models/.record-pending.json)
    5 the champion pointer is replaced                             THE COMMIT POINT
    6 the deploy repository is rebuilt in staging and swapped in   kill -> rebuilt (rolled forward) by the next one
    7 the DVC/git record (`dvc add`, a git commit of the pointers) kill -> completed by the next promotion

so after a kill at any moment the registry and the deploy repository hold the old set or the new set, complete,
and the next promotion (or a rerun of the same one, which then finds "the candidate is the champion already")
finishes the job. The lock (`models/.registry.lock`, an flock the kernel releases when its holder dies) is held from
before the registry is read until the record is written: two promotions serialise, and the second judges against
the first's champion.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout

from tasks.core.errors import UserError
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths
from tasks.core.progress import log
from tasks.registry.deploy_repo import sync_deploy_repository
from tasks.registry.layout import (
    champion_version,
    deployable_dirs,
    rejected_dir,
    serving_dir,
    version_dir,
    version_folders,
)
from tasks.registry.staging import move_in_unique, wipe_staging, write_staged

LOCK_WAIT_S = 3600.0
Recorder = Callable[[int], None]  # records a promotion outside the registry (DVC + git: flows.dvc_sync)


@dataclass(frozen=True)
class Transaction:
    """An open promotion: the registry is locked and recovered. `recorder` (None: record nothing) runs once the
    champion pointer moved, before the lock is released."""

    paths: ProjectPaths
    params: Params
    recorder: Recorder | None


@contextlib.contextmanager
def promotion_transaction(paths: ProjectPaths, params: Params, recorder: Recorder | None = None
                          ) -> Iterator[Transaction]:
    """Lock the registry, recover from any interrupted promotion (`recover`, and its pending DVC/git record), then
    yield; on a normal exit, write this promotion's record (when one is pending) and empty the staging area. On an
    error the lock is released and whatever was half-done is left for the next promotion to recover."""
    with registry_lock(paths):
        recover(paths, params)
        complete_record(paths, recorder, interrupted=True)
        yield Transaction(paths, params, recorder)
        complete_record(paths, recorder)
        wipe_staging(paths)


@contextlib.contextmanager
def registry_lock(paths: ProjectPaths) -> Iterator[None]:
    """Hold `models/.registry.lock`; a second promotion waits (saying so), at most LOCK_WAIT_S seconds."""
    paths.models.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(paths.models / ".registry.lock"), preserve_lock_file=True)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log("promote: another promotion is running in this project; waiting for it to finish")
        try:
            lock.acquire(timeout=LOCK_WAIT_S)
        except Timeout:
            raise UserError(f"another promotion has held {lock.lock_file} for {LOCK_WAIT_S:.0f} s; is it stuck? "
                            f"(the lock is released when its process ends)") from None
    try:
        yield
    finally:
        lock.release()


def recover(paths: ProjectPaths, params: Params) -> None:
    """Undo what a killed promotion left before its commit point and finish what it left after it: temporary files
    and folders deleted, versions above the champion pointer quarantined, the deploy repository made to agree with
    the champion. A champion whose model is missing is a one-line error (it cannot be rebuilt from here)."""
    removed = wipe_staging(paths) + _remove_stray_entries(paths)
    if removed:
        log(f"promote: removed {removed} temporary file(s) or folder(s) an interrupted promotion left")
    _quarantine_uncommitted(paths)
    champion = champion_version(paths)
    if champion is not None and not (version_dir(paths, champion) / "model.onnx").is_file():
        raise UserError(f"the champion v{champion:04d} has no model.onnx in {version_dir(paths, champion)}: restore "
                        f"the registry (`dvc checkout models/registry.dvc` or `dvc pull`), then promote again")
    if _renamed_since(paths, params.export.triton_name, champion):
        return  # export.triton_name changed since the champion was deployed: the next promotion writes the new folder
    if sync_deploy_repository(paths, params.export.triton_name, params.export.triton_max_batch_size):
        log(f"promote: the deploy repository did not hold the champion v{champion:04d}'s set (an interrupted "
            f"promotion); rebuilt it")


def _renamed_since(paths: ProjectPaths, name: str, champion: int | None) -> bool:
    """True when the model folder `name` is absent and another model folder holds the champion: a renamed model (a
    rejected promotion must not write the new folder), not an interrupted promotion."""
    root = serving_dir(paths)
    return (champion is not None and not (root / name).exists() and root.exists()
            and any((folder / str(champion) / "model.onnx").is_file() for folder in root.iterdir()))


def _remove_stray_entries(paths: ProjectPaths) -> int:
    """Delete every hidden entry inside the registry and the deploy repository: nothing of ours is hidden there, so
    these are temporaries of an interrupted write (earlier releases' `.v0006.*`, `.headstart.*`, or DVC's `.*.tmp`)."""
    stray = sorted((p for d in deployable_dirs(paths) if d.exists() for p in d.rglob(".*")),
                   key=lambda p: len(p.parts))
    removed = 0
    for p in stray:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif os.path.lexists(p):
            p.unlink()
        else:
            continue  # inside a folder removed above
        removed += 1
    return removed


def _quarantine_uncommitted(paths: ProjectPaths) -> None:
    """Move every version folder above the champion pointer (a promotion killed before its commit point) to
    models/rejected/, with a reason.json and a log line."""
    champion = champion_version(paths)
    for version, folder in version_folders(paths).items():
        if champion is not None and version <= champion:
            continue
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        dest = move_in_unique(folder, rejected_dir(paths), f"{stamp}-v{version:04d}-uncommitted")
        why = (f"v{version:04d} was written by a promotion interrupted before the champion pointer moved; the champion "
               f"stayed {'none' if champion is None else f'v{champion:04d}'}")
        write_staged(paths, dest / "reason.json", json.dumps({"reason": why}, indent=2))
        log(f"promote: {why}: moved it to {dest.relative_to(paths.root)}")


def _pending_marker(paths: ProjectPaths) -> Path:
    return paths.models / ".record-pending.json"


def mark_record_pending(paths: ProjectPaths, version: int) -> None:
    """Note, before the champion pointer moves, that the DVC/git record of `version` is still to be written."""
    write_staged(paths, _pending_marker(paths), json.dumps({"version": version}) + "\n")


def complete_record(paths: ProjectPaths, recorder: Recorder | None, interrupted: bool = False) -> None:
    """Write the pending DVC/git record (of the champion the registry now has) and clear the note; nothing when no
    record is pending or no recorder is given (the note then waits for a promotion that has one)."""
    marker = _pending_marker(paths)
    if recorder is None or not marker.exists():
        return
    champion = champion_version(paths)
    if champion is not None:
        if interrupted and json.loads(marker.read_text())["version"] == champion:
            log(f"promote: completing the DVC/git record of v{champion:04d}, which an interrupted promotion left "
                f"undone")
        recorder(champion)  # also when the pointer never moved: the record then matches the registry again
    marker.unlink()
