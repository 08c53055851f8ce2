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
    """Record the outputs the flow produced in dvc.lock and the DVC cache (`dvc commit --force`)."""
    if not (root / ".dvc").is_dir():
        return  # not a DVC project (e.g. a plain directory run): nothing to record
    dvc_command(root, "commit", "--force", "--quiet")


def record_promotion(root: Path, version: int) -> None:
    """Track the champion registry and the deploy repository with DVC (`dvc add`, so `dvc push` sends every
    champion) and, in a git repository, commit their two pointer files alone, naming the version: a fresh clone +
    `dvc pull` then restores the champion and the deploy repository."""
    from tasks.core.paths import ProjectPaths
    from tasks.registry.champions import deployable_dirs

    if not (root / ".dvc").is_dir():
        return
    folders = [d.relative_to(root).as_posix() for d in deployable_dirs(ProjectPaths(root))]
    dvc_command(root, "add", "--quiet", *folders)
    pointers = [f"{d}.dvc" for d in folders]
    if (root / ".git").exists():
        git(root, "add", "--force", "--", *pointers)
        if git(root, "diff", "--cached", "--quiet", "--", *pointers, check=False).returncode:
            done = git(root, "commit", "--quiet", "-m", f"headstart: promote v{version:04d}", "--", *pointers,
                       check=False)
            if done.returncode:  # e.g. no git identity here: the promotion stands, only the commit is left to do
                why = (done.stderr or done.stdout).strip().splitlines()
                log(f"promote: warning: could not commit {' '.join(pointers)} ({why[-1] if why else 'git failed'}); "
                    f"commit them yourself so a fresh clone + `dvc pull` finds v{version:04d}")


def git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run git in `root`; a failure is a one-line error (with `check`)."""
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise UserError(f"git {' '.join(args[:2])} failed in {root}: {tail[-1] if tail else proc.returncode}")
    return proc
