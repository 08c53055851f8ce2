"""Offline by construction: the whole pipeline, in every process it starts, attempts no connection beyond loopback.

tests/netguard/sitecustomize.py is put on PYTHONPATH, so every Python process (the CLI, the Prefect server it starts,
Dask's worker processes, dvc and the stage commands dvc runs) loads it first. It blocks and logs any connect, sendto,
name lookup or bind that is not loopback or a unix socket, and logs each process start, so the test also proves the
guard was in the processes it claims to cover.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tasks.core.env import NO_TELEMETRY
from tests.conftest import make_project, run, venv_env

GUARD = Path(__file__).parent / "netguard"


def _guarded_env(log: Path, prefect_home: Path) -> dict:
    """The subprocess environment of a new user: none of our telemetry variables (the entry points and .dvc/config
    must turn telemetry off themselves), no Prefect API (a temporary local server), the guard on PYTHONPATH."""
    env = {k: v for k, v in venv_env().items() if k not in NO_TELEMETRY and not k.startswith("PREFECT_")}
    env |= {"PYTHONPATH": str(GUARD), "HEADSTART_NET_GUARD_LOG": str(log), "PREFECT_HOME": str(prefect_home)}
    return env


def _events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_the_guard_blocks_and_counts_what_leaves_the_machine(tmp_path):
    log = tmp_path / "net.jsonl"
    code = ("import socket, urllib.request\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); socket.create_connection(s.getsockname())\n"
            "for attempt in (lambda: urllib.request.urlopen('https://pypi.org', timeout=5),\n"
            "                lambda: socket.create_connection(('192.0.2.1', 80), timeout=5),\n"
            "                lambda: socket.socket().bind(('0.0.0.0', 0))):\n"
            "    try: attempt(); print('reached')\n"
            "    except OSError as e: print('blocked')\n")
    proc = run([sys.executable, "-c", code], tmp_path, env=_guarded_env(log, tmp_path / "prefect"))
    assert proc.stdout.split() == ["blocked"] * 3  # loopback passed; the lookup, the connect and the bind did not
    blocked = [(e["call"], e["target"]) for e in _events(log) if e["event"] == "blocked"]
    assert blocked == [("getaddrinfo", "'pypi.org'"), ("connect", "('192.0.2.1', 80)"), ("bind", "('0.0.0.0', 0)")]


@pytest.mark.slow
def test_the_whole_pipeline_makes_no_outbound_connection_in_any_process(tmp_path, clipart_raw):
    paths = make_project(tmp_path / "proj", clipart_raw, dvc=True)
    run(["git", "add", "-A"], paths.root)
    run(["git", "commit", "-qm", "project"], paths.root)
    log = tmp_path / "net.jsonl"
    env = _guarded_env(log, tmp_path / "prefect-home")
    py = sys.executable

    run([py, "-m", "tasks.ingest"], paths.root, env=env)                       # a stage alone
    run([py, "-m", "flows.distributed", "--shards", "2"], paths.root, env=env)  # temporary server + Dask workers
    try:
        project_server = env | {"HEADSTART_PREFECT_SERVER": "project"}                 # the server that stays up
        run([py, "-m", "flows.cli", "run"], paths.root, env=project_server)       # the flow, then dvc commit
    finally:
        run([py, "-m", "flows.cli", "prefect", "stop"], paths.root, env=project_server)
    run([py, "-m", "flows.cli", "promote"], paths.root, env=env)                # dvc add + git commit
    run([py, "-m", "dvc", "exp", "run", "-S", "head.C=0.5"], paths.root, env=env)  # dvc runs stage commands
    run([py, "-m", "dvc", "push"], paths.root, env=env)
    run([py, "-m", "flows.cli", "predict", str(clipart_raw / "food")], paths.root, env=env)

    events = _events(log)
    assert [e for e in events if e["event"] == "blocked"] == []
    started = [" ".join(e["argv"]) for e in events if e["event"] == "start"]
    # the guard was in every kind of process the pipeline starts
    for kind in ("tasks.ingest", "flows.distributed", "flows.cli run", "spawn_main", "uvicorn", "prefect server start",
                 "-m dvc", "tasks.head", "tasks.evaluate"):
        assert any(kind in cmd for cmd in started), f"no guarded process ran {kind!r}: {started}"
