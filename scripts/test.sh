#!/usr/bin/env bash
# Install (if needed), then run the test suite (CPU, offline, real data; 16-26 minutes on 2 cores). Arguments go to
# pytest: `bash scripts/test.sh -m "not slow"` is the fast lane (3-5 minutes).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
source scripts/env.sh
exec python -m pytest "$@"
