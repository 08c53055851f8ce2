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

import pytest

from flows.prefect_api import wait_healthy
from tests.conftest import free_port, make_project, venv_env

pytestmark = pytest.mark.slow  # every test here starts a Prefect server and waits for a scheduled run


def _query(env: dict, body: str):
    """Run `body` (async, with a Prefect client `c`, printing one JSON value) against the server in `env`."""
    code = ("import asyncio, json\n"
            "from prefect.client.orchestration import get_client\n"
            "async def main():\n"
            "    async with get_client() as c:\n"
            + "".join(f"        {line}\n" for line in body.splitlines()) +
            "asyncio.run(main())\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else None


def _deployment(env: dict, name: str) -> dict | None:
    """The served retrain deployment `name`: its schedules (cron or interval) and parameters."""
    return _query(env, f"d = await c.read_deployment_by_name('headstart-retrain/{name}')\n"
                       "print(json.dumps({'id': str(d.id), 'parameters': d.parameters, 'schedules': "
                       "[{'cron': getattr(s.schedule, 'cron', None)} for s in d.schedules]}))")


def _deployment_runs(env: dict, name: str) -> list[dict]:
    """Flow runs of deployment `name`: state type and expected start time."""
    deployment = _deployment(env, name)
    if deployment is None:
        return []
    return _query(env, "from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId\n"
                       "from uuid import UUID\n"
                       f"runs = await c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId("
                       f"any_=[UUID('{deployment['id']}')])))\n"
                       "print(json.dumps([{'state': r.state_type.value, 'expected_start': "
                       "r.expected_start_time.isoformat()} for r in runs]))") or []


def _stop(proc) -> None:
    """Stop a whole process group (flow-run and server workers go too)."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A real Prefect server on 127.0.0.1 for this module, and the environment that points at it."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = venv_env() | {"PREFECT_HOME": str(tmp_path_factory.mktemp("prefect-home")), "PREFECT_API_URL": api,
                        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                        # look for due runs every 2 s instead of every 60 s / 10 s, so the tests stay short
                        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2", "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    env.pop("PREFECT_API_KEY", None)
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                               str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        wait_healthy(api, timeout=120)
        yield api, env
    finally:
        _stop(server)


def _small_project(tmp_path, clipart_raw):
    src = tmp_path / "src"
    for c in ("plants", "buildings"):
        shutil.copytree(clipart_raw / c, src / c)
    return make_project(tmp_path / "proj", src, ["retrain.push=false"])


def test_interval_schedule_triggers_a_retrain_run(tmp_path, clipart_raw, prefect_server):
    api, env = prefect_server
    paths = _small_project(tmp_path, clipart_raw)
    served = subprocess.Popen([sys.executable, "-m", "flows.cli", "schedule", "--interval", "20"],
                              cwd=paths.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.time() + 240
        states: list[str] = []
        while time.time() < deadline and "COMPLETED" not in states:
            time.sleep(3)
            states = [r["state"] for r in _deployment_runs(env, "headstart-retrain")]
            assert served.poll() is None, "the schedule process exited"
        assert "COMPLETED" in states, states
        from tasks.registry.champions import champion_model

        assert champion_model(paths) is not None  # the scheduled run retrained and promoted
    finally:
        _stop(served)


def test_cron_schedule_creates_a_deployment_with_that_cron_and_its_runs(tmp_path, clipart_raw, prefect_server):
    """Cron has one-minute granularity: the test checks the deployment's schedule and the runs the server created
    from it (on minute boundaries), without waiting a minute for one to start."""
    import datetime as dt

    api, env = prefect_server
    paths = _small_project(tmp_path, clipart_raw)
    served = subprocess.Popen([sys.executable, "-m", "flows.cli", "schedule", "--cron", "*/5 * * * *", "--name",
                               "headstart-cron"], cwd=paths.root, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, runs = time.time() + 120, []
        while time.time() < deadline and not runs:
            time.sleep(2)
            runs = _deployment_runs(env, "headstart-cron")
            assert served.poll() is None, "the schedule process exited"
        assert runs, "the server created no run from the cron schedule"
        deployment = _deployment(env, "headstart-cron")
        assert [s["cron"] for s in deployment["schedules"]] == ["*/5 * * * *"]
        assert deployment["parameters"] == {"root": str(paths.root)}
        starts = sorted(dt.datetime.fromisoformat(r["expected_start"]) for r in runs)
        assert all(t.minute % 5 == 0 and t.second == 0 and t.microsecond == 0 for t in starts), starts
        # runs wait for their minute; one whose minute came while the test ran may have moved on (found at 07:15)
        now = dt.datetime.now(dt.timezone.utc)
        assert all(r["state"] == "SCHEDULED" or dt.datetime.fromisoformat(r["expected_start"]) <= now for r in runs)
    finally:
        _stop(served)
