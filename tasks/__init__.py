"""headstart: the seven stages flat in this package (`python -m tasks.<stage>`), the pieces they share in sub-packages
named by role (core, dataset, model, modality, extraction, training, data_quality, runtime, evaluation, registry,
inference_server)."""

from tasks.core import env  # noqa: F401  (telemetry off before any heavy import)
