"""The yardstick for a command's start-up: start Python, import the named modules, exit.

`python -m bench._startup_baseline` (nothing imported: the interpreter's own start-up) or
`python -m bench._startup_baseline onnxruntime PIL numpy` (what a predict command cannot avoid importing).
A helper of `bench.headstart_run_vs_dvc_repro`, not a bench: it measures nothing itself.
"""

import importlib
import sys

if __name__ == "__main__":
    for name in sys.argv[1:]:
        importlib.import_module(name)
