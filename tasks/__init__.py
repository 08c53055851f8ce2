"""headstart stages: one module per stage, each runnable as `python -m tasks.<stage>`."""

from tasks import _env  # noqa: F401  (telemetry off before any heavy import)
