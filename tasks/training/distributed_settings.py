"""What a multi-process fine-tuning run's processes agree on without talking: how many torch threads each runs and how
long a collective may wait for a peer. Imports no torch (the launcher reads it too)."""

from __future__ import annotations

import os

from tasks.core.hardware import resolve_threads

COLLECTIVE_TIMEOUT_S = 300.0
THREADS_ENV = "HEADSTART_THREADS_PER_PROCESS"  # what the launcher chose for each process (set only under torchrun)


def collective_timeout_s() -> float:
    """Seconds any collective may wait for a peer before the run ends (env HEADSTART_DDP_TIMEOUT_S): a rank that
    stops answering without dying ends the run instead of hanging it."""
    return float(os.environ.get("HEADSTART_DDP_TIMEOUT_S", COLLECTIVE_TIMEOUT_S))


def threads_per_process(threads: int, world_size: int) -> int:
    """Torch threads for one of `world_size` processes: the total (`threads`; 0 = OMP_NUM_THREADS when the user set
    it, else one per core) divided evenly, at least one, so N processes never run more threads than the machine has
    cores. Under torchrun, what the launcher chose (env HEADSTART_THREADS_PER_PROCESS)."""
    if world_size > 1 and os.environ.get(THREADS_ENV):
        return int(os.environ[THREADS_ENV])
    total = resolve_threads(threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0))
    return max(1, total // world_size)
