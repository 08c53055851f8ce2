"""Process-wide environment defaults: no telemetry, project-local Prefect home, deliberate threads.

Imported first by `tasks` and `flows` so that it runs before prefect, dvc or onnxruntime are imported.
Every value is a default: a variable the user already set wins.
"""

from __future__ import annotations

import os
from pathlib import Path

NO_TELEMETRY = {
    "ORT_DISABLE_TELEMETRY": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


def project_root() -> Path:
    """The directory the pipeline runs in: $HEADSTART_ROOT, else the current working directory."""
    return Path(os.environ.get("HEADSTART_ROOT", os.getcwd())).resolve()


def apply() -> None:
    """Set telemetry-off and Prefect-home defaults in os.environ (never overriding what the user set)."""
    for key, value in NO_TELEMETRY.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PREFECT_HOME", str(project_root() / ".prefect"))
    # the temporary API server's default 20 s start-up limit is too short on a small machine busy with other work
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # the embedded API server's access log is noise in a CLI run; flow and task logs stay at INFO
    os.environ.setdefault("PREFECT_LOGGING_SERVER_LEVEL", "WARNING")


apply()
