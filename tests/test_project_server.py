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


def test_prefect_stop_with_a_stale_pid_file_signals_nothing_and_says_the_pid_file_is_stale(tmp_path):
    """A pid file outlives its server and pids are reused: `stop` checks the pid is the server it started (command
    line, start time) before signalling. Unrelated processes holding the recorded pid survive."""
    import psutil

    home = tmp_path / ".prefect"
    home.mkdir()
    env = venv_env() | {"PREFECT_HOME": str(home), "HEADSTART_PREFECT_SERVER": "project"}
    unrelated = subprocess.Popen(["sleep", "60"])
    # a process that looks like a Prefect server by its command line, but started at another time than recorded
    lookalike = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "prefect", "server", "start"])
    try:
        for proc, verb, what in ((unrelated, "prefect", "is now `sleep 60`, not a Prefect server"),
                                 (lookalike, "server", "is a Prefect server started at another time than the one "
                                                       "recorded")):
            (home / "server.pid").write_text(str(proc.pid))
            (home / "headstart-server.json").write_text(json.dumps({
                "pid": proc.pid, "port": 9, "api": "http://127.0.0.1:9/api", "prefect": "3.8.8",
                "started": psutil.Process(proc.pid).create_time() - 100}))
            assert "not running" in _cli([verb, "status"], tmp_path, env).stdout
            stopped = _cli([verb, "stop"], tmp_path, env)
            assert stopped.returncode == 0, stopped.stderr
            assert stopped.stdout.strip() == (f"headstart prefect: the pid file {home / 'server.pid'} is stale (pid "
                                              f"{proc.pid} {what}); left that process alone and removed the pid file")
            assert proc.poll() is None  # still running: nothing was signalled
            assert not (home / "server.pid").exists() and not (home / "headstart-server.json").exists()
        assert _cli(["prefect", "stop"], tmp_path, env).stdout.strip() == "headstart prefect: none was running"
    finally:
        for proc in (unrelated, lookalike):
            proc.kill()
            proc.wait()
