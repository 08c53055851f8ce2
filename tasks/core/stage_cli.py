"""The shared `python -m tasks.<stage>` entry point: params.yaml (+ -S overrides) -> run the stage function."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from tasks.core.disk_space import disk_full_anywhere
from tasks.core.errors import exit_on_user_error
from tasks.core.params import Params, load_params


@exit_on_user_error
def run_stage_cli(run: Callable[[Params], object], module: str, argv: list[str] | None = None) -> None:
    """Parse `-S key=value` overrides, load params.yaml, run the stage; user errors (a full disk among them, wherever
    it is met) exit 2 with one line."""
    doc = (sys.modules[module].__doc__ or "").strip().splitlines()
    ap = argparse.ArgumentParser(prog=f"python -m {module}", description=doc[0] if doc else None)
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a param for this run only (e.g. head.C=0.1)")
    args = ap.parse_args(argv)
    params = load_params(overrides=args.set)
    try:
        run(params)
    except Exception as exc:
        spec = getattr(sys.modules[module], "__spec__", None)  # under `python -m`, `module` is __main__
        full = disk_full_anywhere(exc, f"python -m {spec.name if spec else module}")
        if full is None:
            raise
        raise full from None
