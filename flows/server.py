"""A local Prefect server for schedules: started by the project on 127.0.0.1 unless PREFECT_API_URL names one."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from typing import Iterator

from tasks.core.errors import UserError


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
