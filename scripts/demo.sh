#!/usr/bin/env bash
# Install (if needed), then run the demo end to end: clip-art images -> ONNX classifier, metrics and plots.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
source scripts/env.sh
exec headstart demo "$@"
