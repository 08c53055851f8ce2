#!/usr/bin/env bash
# Install (if needed), then run the test suite (CPU, offline, real data; about 5 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
source scripts/env.sh
exec python -m pytest "$@"
