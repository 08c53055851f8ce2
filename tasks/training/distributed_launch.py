"""Fine-tuning on N processes: the stage launches itself under torchrun (`python -m torch.distributed.run
--standalone --nproc_per_node=N`), waits, and turns a failure into one line. Imports no torch: the launcher only
decides, starts and reads.

Because the launch happens inside the stage function, every way of running the stage gets it: `python -m
tasks.finetune`, `dvc repro`, `headstart stage finetune` and the Prefect task (which calls the same function).
`--standalone` starts a private rendezvous store on a port the OS picks, so a port in use (29500 taken by another
job) does not matter. Each process gets `threads // N` torch threads (at least one; `finetune.threads`, or
OMP_NUM_THREADS when set, or one per core), so N processes never run more threads than the machine has cores.

A rank that raises writes its one-line error to the run folder before exiting; torchrun then stops the other ranks.
A rank killed by a signal writes nothing, and torchrun's own failure report names it. The stage raises one UserError
naming the rank and its error: the rank that failed first on its own, not the ranks that merely lost their peer.
Every collective has a timeout (`tasks.training.distributed_settings`, env `HEADSTART_DDP_TIMEOUT_S`), so a rank
that stops answering without dying ends the run too.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tasks.core.errors import UserError
from tasks.core.hardware import cuda_available, resolve_threads
from tasks.core.params import FinetuneParams, Params
from tasks.core.paths import ProjectPaths
from tasks.core.progress import log
from tasks.training.distributed_settings import THREADS_ENV, threads_per_process

_LAUNCHER_NOISE = re.compile(r"^\[?[IWEF]\d{4} \d\d:\d\d:\d\d|^\s*$")  # torch's glog-style lines, blank lines


def _cores() -> int:
    return resolve_threads(0)


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def resolve_nproc(p: FinetuneParams) -> int:
    """How many processes fine-tune: `nproc`, or for `auto` one per GPU (1 on CPU). One-line errors for more
    processes than GPUs on CUDA and for a global batch N does not divide; a warning for N > 1 on fewer cores than N."""
    on_cuda = p.device == "cuda" or (p.device == "auto" and cuda_available())
    gpus = _gpu_count() if on_cuda else 0
    n = (gpus or 1) if p.nproc == "auto" else p.nproc
    if on_cuda and n > gpus:
        raise UserError(f"finetune.nproc={n} but this machine has {gpus} CUDA device{'s' * (gpus != 1)}: one process "
                        f"per GPU at most; use finetune.nproc=auto (or finetune.device=cpu for CPU processes)")
    if n > 1 and p.batch_size % n:
        raise UserError(f"finetune.batch_size={p.batch_size} is not divisible by finetune.nproc={n}: the global batch "
                        f"is split evenly over the processes; use a multiple of {n}")
    if n > 1 and not on_cuda and _cores() < n:
        log(f"finetune: warning: finetune.nproc={n} on {_cores()} core{'s' * (_cores() != 1)}: the processes will "
            f"share cores and run slower than one process; use finetune.nproc=1 here")
    return n


def _forward(stream, tail: collections.deque) -> None:
    """Copy the workers' log lines (rank 0's; the others write to the run folder) to stderr as they come; keep
    torchrun's own report (glog lines, tracebacks) out of the user's log but in `tail` for failure_line."""
    quiet = False
    for line in stream:
        tail.append(line)
        quiet = quiet or line.startswith("Traceback") or "ChildFailedError" in line
        if not quiet and not _LAUNCHER_NOISE.match(line):
            sys.stderr.write(line)
            sys.stderr.flush()


def launch(params: Params, paths: ProjectPaths, nproc: int) -> dict:
    """Run the fine-tune stage as `nproc` processes under torchrun and return rank 0's summary; a failure is one
    UserError naming the rank and its error."""
    from tasks.model.finetune_record import finetune_summary
    from tasks.training import distributed_worker

    per = threads_per_process(params.finetune.threads, nproc)
    with tempfile.TemporaryDirectory(prefix="headstart-ddp-") as tmp:
        rundir = Path(tmp)
        (rundir / "run.json").write_text(json.dumps({"params": params.model_dump(mode="json"),
                                                     "root": str(paths.root)}))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "--max-restarts=0", "--monitor-interval=0.5", "-m", distributed_worker.__name__, str(rundir)]
        env = {**os.environ, "OMP_NUM_THREADS": str(per), THREADS_ENV: str(per)}
        log(f"finetune: {nproc} processes (torchrun, DDP), {per} thread{'s' * (per != 1)} each; global batch "
            f"{params.finetune.batch_size}, {params.finetune.batch_size // nproc} per process")
        tail: collections.deque = collections.deque(maxlen=400)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=paths.root, env=env, stderr=subprocess.PIPE, text=True, errors="replace")
        try:
            _forward(proc.stderr, tail)
            code = proc.wait()
        except BaseException:  # Ctrl-C or a Prefect cancel: take the workers down with us
            proc.send_signal(signal.SIGTERM)
            proc.wait()
            raise
        if code != 0:
            raise UserError(failure_line(rundir, "".join(tail), code, time.perf_counter() - t0))
    return finetune_summary(paths)


def _rank_errors(rundir: Path) -> list[dict]:
    return sorted((json.loads(f.read_text()) for f in rundir.glob("error-rank*.json")), key=lambda e: e["time"])


def _signal_deaths(report: str) -> list[tuple[int, str]]:
    """(rank, signal name) of the ranks torchrun's failure report lists as killed by a signal other than the SIGTERM
    torchrun itself sends to the survivors."""
    out = []
    for rank, code in re.findall(r"rank\s*:\s*(\d+) \(local_rank: \d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)", report):
        if int(code) < 0 and -int(code) != signal.SIGTERM:
            try:
                name = signal.Signals(-int(code)).name
            except ValueError:
                name = f"signal {-int(code)}"
            out.append((int(rank), name))
    return out


def failure_line(rundir: Path, report: str, code: int, seconds: float) -> str:
    """One line for a failed multi-process run: a user error as itself; else the first rank that failed on its own
    (an exception, or death by a signal), before the ranks that only lost a peer."""
    errors = _rank_errors(rundir)
    for e in errors:
        if e["kind"] == "user":
            return e["error"]
    own = [e for e in errors if e["kind"] == "own"]
    if own:
        return f"finetune: rank {own[0]['rank']} failed after {seconds:.0f}s: {own[0]['error']} (the run was stopped)"
    deaths = _signal_deaths(report)
    if deaths:
        rank, name = deaths[0]
        return (f"finetune: rank {rank} died after {seconds:.0f}s (killed by {name}; out of memory?) and the run was "
                f"stopped; run it again to resume from the last finished epoch")
    if errors:
        e = errors[0]
        return f"finetune: rank {e['rank']} failed after {seconds:.0f}s: {e['error']} (the run was stopped)"
    return f"finetune: the {'processes' if code else 'run'} failed (torchrun exit status {code}) after {seconds:.0f}s"
