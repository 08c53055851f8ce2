"""One rank of a multi-process fine-tuning run: what `tasks.training.distributed_launch` starts under torchrun
(`python -m tasks.training.distributed_worker RUN_FOLDER`). It reads the run's params and project root from the run
folder, trains its share (`tasks.training.finetune_run.train`, which joins the process group), and on failure writes
one line to `RUN_FOLDER/error-rank<R>.json` for the launcher. Ranks other than 0 write their log to
`RUN_FOLDER/rank<R>.log` instead of the console: the user reads one log, rank 0's.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import time
from pathlib import Path

# a peer that died or stopped answering shows up on the survivors as one of these (gloo, NCCL, the TCP store)
_LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "DistBackendError", "DistNetworkError",
              "Timed out", "timed out", "NCCL communicator was aborted", "Broken pipe")


def _write_error(rundir: Path, rank: int, kind: str, error: str) -> None:
    f = rundir / f"error-rank{rank}.json"
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rank": rank, "kind": kind, "error": error, "time": time.time()}))
    os.replace(tmp, f)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    rundir = Path(args[0])
    rank = int(os.environ.get("RANK", "0"))
    if rank:
        log_file = open(rundir / f"rank{rank}.log", "a", buffering=1)  # noqa: SIM115 (kept open for the process)
        sys.stdout = sys.stderr = log_file
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)  # `kill -USR1`: where is a rank stuck?
    import tasks.core.env  # noqa: F401  (no telemetry, as in every entry point)
    from tasks.core.errors import UserError
    from tasks.core.params import Params
    from tasks.core.paths import ProjectPaths

    try:
        spec = json.loads((rundir / "run.json").read_text())
        from tasks.training.finetune_run import train

        train(Params.model_validate(spec["params"]), ProjectPaths(Path(spec["root"])))
    except UserError as exc:
        _write_error(rundir, rank, "user", str(exc))
        raise SystemExit(2) from None
    except BaseException as exc:  # noqa: BLE001 (every failure is reported, then the rank exits non-zero)
        text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]
        kind = "lost_peer" if any(s in f"{type(exc).__name__} {exc}" for s in _LOST_PEER) else "own"
        _write_error(rundir, rank, kind, text)
        if rank:
            import traceback

            traceback.print_exc()  # into this rank's log file
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
