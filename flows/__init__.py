"""Prefect flows: compose the stages in `tasks/`; no ML logic lives here."""

from tasks.core import env  # noqa: F401  (telemetry off and PREFECT_HOME set before prefect is imported)
