"""Bring DVC's record up to date after a flow ran the stages itself, so `dvc status` is clean and `dvc push` works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tasks.core.errors import UserError
from tasks.core.progress import log


def dvc_command(root: Path, *args: str, timeout: float = 600) -> str:
    """Run `dvc <args>` with this interpreter's environment (so stage commands find the venv's python)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise UserError(f"dvc {' '.join(args)} failed in {root}: {tail[-1] if tail else proc.returncode}")
    return proc.stdout


def dvc_commit(root: Path) -> None:
    """Record the outputs the flow produced in dvc.lock and the DVC cache (`dvc commit --force`). `--no-relink`: the
    workspace is left as it is, where relinking re-creates every hard-linked file of the registry and the deploy
    repository (delete, then rename a copy in: a kill between the two loses the file)."""
    if not (root / ".dvc").is_dir():
        return  # not a DVC project (e.g. a plain directory run): nothing to record
    dvc_command(root, "commit", "--force", "--quiet", "--no-relink")


def record_promotion(root: Path, version: int) -> None:
    """Track the champion registry and the deploy repository with DVC (`dvc add`, so `dvc push` sends every
    champion) and, in a git repository, commit their two pointer files alone, naming the version: a fresh clone +
    `dvc pull` then restores the champion and the deploy repository.

    Idempotent, so a promotion that was killed half-way through it is completed by the next one (the registry's
    transaction calls it again, `tasks.registry.transaction.complete_record`). `--no-relink`: DVC copies the files
    into its cache and leaves the workspace alone, where relinking re-creates every hard-linked deployable file
    (delete, then rename a copy in: a kill between the two left a version without its model.onnx)."""
    from tasks.core.paths import ProjectPaths
    from tasks.registry.champions import deployable_dirs
    from tasks.registry.staging import crash_point

    if not (root / ".dvc").is_dir():
        return
    folders = [d.relative_to(root).as_posix() for d in deployable_dirs(ProjectPaths(root))]
    pointers = [f"{d}.dvc" for d in folders]
    _drop_torn_pointers(root, pointers)
    dvc_command(root, "add", "--quiet", "--no-relink", *folders)
    crash_point("dvc-added")
    if (root / ".git").exists():
        git(root, "add", "--force", "--", *pointers)
        crash_point("git-added")
        if git(root, "diff", "--cached", "--quiet", "--", *pointers, check=False).returncode:
            done = git(root, "commit", "--quiet", "-m", f"headstart: promote v{version:04d}", "--", *pointers,
                       check=False)
            if done.returncode:  # e.g. no git identity here: the promotion stands, only the commit is left to do
                why = (done.stderr or done.stdout).strip().splitlines()
                log(f"promote: warning: could not commit {' '.join(pointers)} ({why[-1] if why else 'git failed'}); "
                    f"commit them yourself so a fresh clone + `dvc pull` finds v{version:04d}")


def _drop_torn_pointers(root: Path, pointers: list[str]) -> None:
    """Delete a .dvc pointer that is not a YAML mapping with `outs` (DVC killed while writing it): `dvc add` then
    writes it anew, where it would refuse to read it."""
    import yaml

    for name in pointers:
        f = root / name
        try:
            ok = not f.exists() or isinstance((yaml.safe_load(f.read_text()) or {}).get("outs"), list)
        except (yaml.YAMLError, AttributeError, UnicodeDecodeError):
            ok = False
        if not ok:
            log(f"promote: {name} was half-written (an interrupted `dvc add`); writing it anew")
            f.unlink()


def git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run git in `root`; a failure is a one-line error (with `check`)."""
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise UserError(f"git {' '.join(args[:2])} failed in {root}: {tail[-1] if tail else proc.returncode}")
    return proc
