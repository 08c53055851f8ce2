# Environment for every headstart shell command: nothing leaves this machine, Prefect keeps its state in the project.
# The telemetry variables are tasks/core/env.py's NO_TELEMETRY (tests/test_layout.py keeps the two and .dvc/config
# in agreement); Python entry points set them themselves.
export ORT_DISABLE_TELEMETRY=1
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export DO_NOT_TRACK=1
export DVC_NO_ANALYTICS=1
export HF_HUB_OFFLINE=1
export HF_HUB_DISABLE_TELEMETRY=1
export PREFECT_HOME="${PREFECT_HOME:-$(pwd)/.prefect}"
export PATH="$(pwd)/.venv/bin:$PATH"
