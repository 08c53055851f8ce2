"""Local Prefect servers, on 127.0.0.1 unless PREFECT_API_URL names one.

- **The project's server** (`project_server`): `headstart run`, `demo` and `retrain` talk to a server that stays up
  between runs, so a run pays for connecting, not for starting a temporary API (~15-20 s on 2 cores). It starts on
  first use on a free port, detached from the terminal, and keeps Prefect's own conventions: its pid is in
  `$PREFECT_HOME/server.pid` (so `prefect server stop` stops it, as does `headstart prefect stop`), its database in
  `$PREFECT_HOME` (the project's `.prefect/`), its log in `.prefect/server.log`. `HEADSTART_PREFECT_SERVER=temporary`
  keeps Prefect's temporary per-run server instead (what the tests use: they never leave a server running).
- **A schedule's server** (`local_server`): `headstart schedule` runs one for as long as it serves, on its own port.

Why not `prefect server start --background` (Prefect 3.8): it starts uvicorn with stdout and stderr on pipes that
nobody reads once the command returns (a server that logs more than a pipe buffer blocks), in the caller's session
(Ctrl-C on a run would stop it), and does not wait for health. This module runs the same `prefect server start` in the
foreground of a detached process with its log in a file, and keeps Prefect's pid-file convention, so `prefect server
stop` still works.

A pid file outlives its process, and the kernel reuses pids: before `headstart prefect stop` signals the pid in
`server.pid` (and before `status` reports it), it checks that the pid is the server this module started: a Prefect
server command line, and the start time recorded in `headstart-server.json` (psutil). A pid that is some other process
now makes the pid file stale: it is removed, the process is left alone, and the command says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import psutil

from tasks.core.errors import UserError

MODE_ENV = "HEADSTART_PREFECT_SERVER"  # "project" (default) or "temporary"


def wait_healthy(api_url: str, timeout: float = 120.0) -> None:
    """Block until `<api_url>/health` answers, or raise a one-line error."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise UserError(f"the Prefect server at {api_url} did not become healthy within {timeout:.0f}s")


@contextlib.contextmanager
def local_server(port: int | None = None) -> Iterator[str]:
    """Use PREFECT_API_URL if set; else run `prefect server start` on 127.0.0.1 for the duration. Yields the API URL."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    port = port or 4200
    api = f"http://127.0.0.1:{port}/api"
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(api)
        os.environ["PREFECT_API_URL"] = api
        print(f"Prefect server (UI and API) on http://127.0.0.1:{port}", file=sys.stderr)
        yield api
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _prefect_home() -> Path:
    return Path(os.environ["PREFECT_HOME"])  # tasks.core.env sets it (default: <project>/.prefect)


def _state_file() -> Path:
    return _prefect_home() / "headstart-server.json"


def _healthy(api: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def _is_prefect_server(cmdline: list[str]) -> bool:
    """True for the command line of `python -m prefect server start ...` (or the `prefect server start` script)."""
    args = [os.path.basename(a) for a in cmdline]
    return any(args[i:i + 3] == ["prefect", "server", "start"] for i in range(len(args)))


def _server_process(pid: int, state: dict | None) -> tuple[psutil.Process | None, str]:
    """(the process, "") when `pid` is the Prefect server that was started (its command line, and the start time in
    `state` when recorded); else (None, what `pid` is instead, or "" when no such process runs)."""
    try:
        proc = psutil.Process(pid)
        cmdline, started = proc.cmdline(), proc.create_time()
    except psutil.NoSuchProcess:  # gone, or a zombie: nothing to signal
        return None, ""
    except psutil.AccessDenied:
        return None, f"pid {pid} is another user's process"
    if not _is_prefect_server(cmdline):
        return None, f"pid {pid} is now `{' '.join(cmdline)[:80]}`, not a Prefect server"
    recorded = (state or {}).get("started")
    if recorded is not None and abs(started - recorded) > 1.0:
        return None, f"pid {pid} is a Prefect server started at another time than the one recorded"
    return proc, ""


def _read_state() -> tuple[int | None, dict | None]:
    """(pid in server.pid, headstart-server.json), each None when missing or unreadable."""
    try:
        pid = int((_prefect_home() / "server.pid").read_text())
    except (OSError, ValueError):
        pid = None
    try:
        state = json.loads(_state_file().read_text())
    except (OSError, ValueError):
        state = None
    return pid, state


def running_project_server() -> dict | None:
    """The project's server as recorded, if its process is alive, is that server, and answers; None otherwise."""
    pid, state = _read_state()
    if pid is None or state is None or pid != state.get("pid"):
        return None
    proc, _ = _server_process(pid, state)
    if proc is None or not _healthy(state["api"]):
        return None
    return state


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_project_server() -> dict:
    """Start the project's Prefect server (unless it runs already) and return its state {pid, port, api, prefect}.
    Imports no Prefect module: Prefect reads PREFECT_API_URL once, when first imported."""
    from importlib.metadata import version

    prefect_version = version("prefect")
    state = running_project_server()
    if state is not None and state.get("prefect") == prefect_version:
        return state
    if state is not None:  # another Prefect version than this environment's: replace it
        stop_project_server()
    home = _prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    with open(home / "server.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                                 str(port)], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)  # its own session: Ctrl-C on a run does not stop it
    (home / "server.pid").write_text(str(proc.pid))
    state = {"pid": proc.pid, "port": port, "api": api, "prefect": prefect_version,
             "started": psutil.Process(proc.pid).create_time()}  # with the pid, names this process and no later one
    _state_file().write_text(json.dumps(state))
    try:
        wait_healthy(api)
    except UserError:
        stop_project_server()
        raise UserError(f"the project's Prefect server did not start; see {home / 'server.log'}") from None
    print(f"Prefect server for this project started on {api.removesuffix('/api')} (127.0.0.1 only); it stays up "
          f"for the next runs: `headstart prefect stop` stops it", file=sys.stderr)
    return state


def stop_project_server() -> str:
    """Stop the project's Prefect server, signalling only that process; returns what happened, for the user: "stopped",
    "none was running", or why the pid file was stale (its pid is another process now, left alone). The pid file and
    state are removed in every case."""
    pid, state = _read_state()
    outcome = "none was running"
    if pid is not None:
        proc, other = _server_process(pid, state)
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except psutil.TimeoutExpired:
                proc.kill()  # psutil checks the pid is still this process before signalling
            outcome = "stopped"
        elif other:
            outcome = (f"the pid file {_prefect_home() / 'server.pid'} is stale ({other}); left that process alone "
                       f"and removed the pid file")
    (_prefect_home() / "server.pid").unlink(missing_ok=True)
    _state_file().unlink(missing_ok=True)
    return outcome


def use_project_server() -> str | None:
    """Point this process's Prefect client at the project's server (started if needed) and return its API URL;
    None when PREFECT_API_URL is set already or HEADSTART_PREFECT_SERVER=temporary. Call it before anything imports
    prefect."""
    mode = os.environ.get(MODE_ENV, "project")
    if mode not in ("project", "temporary"):
        raise UserError(f"{MODE_ENV}={mode!r}: use 'project' (a server that stays up) or 'temporary' (one per run)")
    if os.environ.get("PREFECT_API_URL") or mode == "temporary":
        return None
    api = start_project_server()["api"]
    os.environ["PREFECT_API_URL"] = api
    return api
