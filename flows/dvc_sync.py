"""Bring DVC's record up to date after a flow ran the stages itself, so `dvc status` is clean and `dvc push` works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tasks.core.errors import UserError


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

