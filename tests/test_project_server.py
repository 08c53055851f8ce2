"""The project's Prefect server: started on first use, on 127.0.0.1, reused by the next run, stopped on request."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import make_project, venv_env


def _cli(args: list[str], cwd, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_the_project_server_starts_once_serves_the_next_run_and_stops(tmp_path, clipart_raw):
    src = tmp_path / "src"
    for c in ("plants", "buildings"):
        shutil.copytree(clipart_raw / c, src / c)
    paths = make_project(tmp_path / "proj", src)
    home = paths.root / ".prefect"
    env = {k: v for k, v in venv_env().items() if k != "PREFECT_API_URL"}
    env |= {"HEADSTART_PREFECT_SERVER": "project", "PREFECT_HOME": str(home)}
    try:
        started = _cli(["prefect", "start"], paths.root, env)
        assert started.returncode == 0, started.stderr[-2000:]
        state = json.loads((home / "headstart-server.json").read_text())
        assert state["api"].startswith("http://127.0.0.1:") and int((home / "server.pid").read_text()) == state["pid"]
        assert "stays up for the next runs" in started.stderr

        ran = _cli(["run", "--no-commit"], paths.root, env)
        assert ran.returncode == 0, ran.stderr[-3000:]
        assert "Starting temporary server" not in ran.stderr and "started on" not in ran.stderr  # reused, not started
        runs = subprocess.run(
            [sys.executable, "-c", "import asyncio, json\nfrom prefect.client.orchestration import get_client\n"
             "async def main():\n    async with get_client() as c:\n"
             "        print(json.dumps([r.state_type.value for r in await c.read_flow_runs()]))\n"
             "asyncio.run(main())\n"], env=env | {"PREFECT_API_URL": state["api"]}, capture_output=True, text=True,
            timeout=60)
        assert json.loads(runs.stdout.strip().splitlines()[-1]) == ["COMPLETED"]  # recorded in the project's server

        assert "(pid" in _cli(["prefect", "status"], paths.root, env).stdout
        alias = _cli(["server", "status"], paths.root, env)  # the old verb: one release, and it says so
        assert "(pid" in alias.stdout and "deprecated, use `headstart prefect`" in alias.stderr
    finally:
        stopped = _cli(["prefect", "stop"], paths.root, env)
    assert stopped.stdout.strip() == "headstart prefect: stopped"
    assert not (home / "server.pid").exists()
    try:
        os.kill(state["pid"], 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive
    assert "not running" in _cli(["prefect", "status"], paths.root, env).stdout
