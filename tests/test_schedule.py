"""A scheduled deployment served against a local Prefect server (127.0.0.1) triggers retraining runs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from flows.server import wait_healthy
from tests.conftest import free_port, make_project, venv_env


def _completed_runs(api: str, env: dict) -> list[str]:
    code = (
        "import asyncio, json\n"
        "from prefect.client.orchestration import get_client\n"
        "async def main():\n"
        "    async with get_client() as c:\n"
        "        runs = await c.read_flow_runs()\n"
        "        print(json.dumps([r.state_type.value for r in runs if r.deployment_id]))\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else []


def test_interval_schedule_triggers_a_retrain_run(tmp_path, clipart_raw):
    src = tmp_path / "src"
    for c in ("plants", "buildings"):
        shutil.copytree(clipart_raw / c, src / c)
    paths = make_project(tmp_path / "proj", src, ["retrain.push=false"])
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = venv_env() | {"PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api,
                        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                        # look for due runs every 2 s instead of every 60 s / 10 s, so the test stays short
                        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2", "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    env.pop("PREFECT_API_KEY", None)
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                               str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    served = None
    try:
        wait_healthy(api, timeout=120)
        served = subprocess.Popen([sys.executable, "-m", "flows.cli", "schedule", "--interval", "20"],
                                  cwd=paths.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        deadline = time.time() + 240
        states: list[str] = []
        while time.time() < deadline and "COMPLETED" not in states:
            time.sleep(3)
            states = _completed_runs(api, env)
            assert served.poll() is None, "the schedule process exited"
        assert "COMPLETED" in states, states
        from tasks.serving.champions import champion_model

        assert champion_model(paths) is not None  # the scheduled run retrained and promoted
    finally:
        for proc in (served, server):  # whole process groups: flow-run and server workers go too
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
