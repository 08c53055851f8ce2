"""The bench harness: the one way every benchmark builds its project, runs stages, times a comparison and reports.

- `scratch_project(...)`: a runnable project in a folder of its own, built by `tests.scratch_project.make_project`
  (the test fixtures' builder) with real data: clip-art, Fashion-MNIST or BBC News;
- `run_stage(name, params, paths)`: one stage as the pipeline runs it: the stage function in this process (what
  `headstart run` and the Prefect flows call), or `python -m tasks.<stage>` in the project folder (what each dvc.yaml
  stage runs) when process start-up and imports are part of what is measured;
- `paired(baseline, candidate, reps)`: the two timed in turn, pair by pair, medians and the median ratio;
- `emit(question, **fields)`: one JSON row per result, printed and appended to bench/out/<bench>.jsonl;
- `run_child(module, ...)` / `reply(...)`: a measurement in a fresh Python process is a real function of the bench,
  run as `python -m bench.<module> --child ...`, that answers with one JSON line.

Benches run as modules from the repository root: `python -m bench.<name> [--quick]`. Those that time a
re-implementation rather than headstart's own code live in `bench/not_headstart_path/`.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.scratch_project import (
    REPO,
    TEST_OVERRIDES,
    bbc_raw,
    clipart_raw,
    fmnist_csv,
    make_project,
    project_params,
    venv_env,
)

OUT = REPO / "bench" / "out"  # git-ignored: JSON rows, scratch projects, materialised data

DATA_SETS = ("clipart", "bbc", "fmnist")


# ----------------------------------------------------------------------------------------------- scratch projects

def scratch_project(dest: Path, data: str | Path | None = "clipart", *, per_class: int | None = None,
                    fraction: float = 1.0, overrides: Sequence[str] = (), dvc: bool = False,
                    test_defaults: bool = False, fresh: bool = True):
    """A runnable project at `dest` (deleted first when `fresh`), built exactly as the test fixtures build theirs
    (`tests.scratch_project.make_project`), with real data:

    - "clipart": the demo's clip-art, `per_class` images of each of the 7 classes (all when None), at data/raw;
    - "bbc": BBC News, `per_class` articles per topic, at data/raw, with `backbone.name=minilm`;
    - "fmnist": Fashion-MNIST, `fraction` of each official set, as PNGs + labels.csv (ingest.source points at it,
      ingest.group_pattern=null: the CSV carries its splits);
    - a folder: linked at data/raw as it is; None: no data.

    The data is materialised once into `dest`'s sibling `data-cache/` (same file system: the project links it) and
    reused. Params are the shipped params.yaml (the test suite's small settings with `test_defaults`), the image
    backbone unless the data is text, then `overrides`. With `dvc`: a git repo with DVC initialised like ours.
    Returns the project's `ProjectPaths`."""
    dest = Path(dest).resolve()
    if fresh:
        shutil.rmtree(dest, ignore_errors=True)
    cache = dest.parent / "data-cache"
    raw, more = None, []
    if data == "clipart":
        raw = clipart_raw(cache / f"clipart-{per_class or 'all'}", per_class)
    elif data == "bbc":
        raw, more = bbc_raw(cache / f"bbc-{per_class or 'all'}", per_class), ["backbone.name=minilm"]
    elif data == "fmnist":
        csv = fmnist_csv(cache / f"fmnist-{fraction:g}", fraction)
        more = [f"ingest.source={csv}", "ingest.group_pattern=null"]
    elif data is not None:
        raw = Path(data)
    return make_project(dest, raw, [*more, *overrides], dvc=dvc, defaults=TEST_OVERRIDES if test_defaults else ())


def stage_params(paths, overrides: Sequence[str] = ()):
    """The validated params of a scratch project (its params.yaml plus `overrides`), as a stage would load them."""
    return project_params(paths, list(overrides))


def hold_out(paths, share: float = 0.1, seed: int = 0) -> int:
    """Move a seeded `share` of the files under data/raw to data/held (same sub-folders); returns how many. What
    "new data arrives" benches start from; `add_back` brings them in."""
    import numpy as np

    raw, held = paths.root / "data" / "raw", paths.root / "data" / "held"
    files = sorted(p for p in raw.rglob("*") if p.is_file())
    picked = np.random.default_rng(seed).choice(len(files), size=int(len(files) * share), replace=False)
    for i in sorted(picked.tolist()):
        dest = held / files[i].relative_to(raw)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(files[i], dest)
    return len(picked)


def add_back(paths) -> int:
    """Move every file `hold_out` set aside back under data/raw; returns how many."""
    raw, held = paths.root / "data" / "raw", paths.root / "data" / "held"
    files = sorted(p for p in held.rglob("*") if p.is_file())
    for f in files:
        dest = raw / f.relative_to(held)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, dest)
    return len(files)


# ---------------------------------------------------------------------------------------------------- stages

@dataclass
class StageRun:
    """One stage run: its name, wall seconds, and the stage's summary (in process) or the finished process."""

    name: str
    seconds: float
    result: Any


def run_stage(name: str, params=None, paths=None, *, fresh_process: bool = False,
              overrides: Sequence[str] = ()) -> StageRun:
    """Run stage `name` as the pipeline runs it and time it.

    In process (default): `tasks.core.stages.stage_function(name)(params, paths)`, the plain stage function that
    `headstart run` and the Prefect flows call (params: `stage_params(paths, overrides)` when None).
    With `fresh_process=True`: `python -m tasks.<name> -S <overrides>` in the project folder, the command each dvc.yaml
    stage runs, so interpreter start-up and imports are in the time; it reads the project's params.yaml.
    A failing stage raises (in a subprocess: AssertionError with the tail of its output)."""
    from tasks.core.stages import STAGES, stage_function

    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
    if fresh_process:
        cmd = [sys.executable, "-m", f"tasks.{name}"] + [a for o in overrides for a in ("-S", o)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=paths.root, env=venv_env(), capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return StageRun(name, seconds, proc)
    params = params if params is not None else stage_params(paths, overrides)
    fn = stage_function(name)
    t0 = time.perf_counter()
    result = fn(params, paths)
    return StageRun(name, time.perf_counter() - t0, result)


def run_stages(names: Sequence[str], params, paths) -> dict[str, StageRun]:
    """`run_stage` for each of `names` in order (in process), keyed by name."""
    return {name: run_stage(name, params, paths) for name in names}


def built_project(bench: str, existing: Path | None, quick: bool, promote: bool = False):
    """(params, paths) of an `existing` project (a bench's --project), or of a new clip-art scratch project under
    bench/out/<bench>/ on which every stage ran (10 images per class at 64 px when `quick`), its candidate promoted
    to champion when `promote`."""
    from tasks.core.paths import ProjectPaths
    from tasks.core.stages import STAGES

    if existing is not None:
        paths = ProjectPaths(existing.resolve())
        return stage_params(paths), paths
    paths = scratch_project(OUT / bench / "project", "clipart", per_class=10 if quick else None,
                            overrides=["backbone.input_size=64"] if quick else [])
    params = stage_params(paths)
    run_stages(STAGES, params, paths)
    if promote:
        from tasks.registry.promotion import judge_and_publish

        judge_and_publish(params, paths)
    return params, paths


# ---------------------------------------------------------------------------------------------------- timing

Runnable = Callable[[], Any] | Sequence[str]


def time_once(what: Runnable, cwd: Path | None = None, env: dict | None = None) -> float:
    """Wall seconds of one run of `what`: a callable (called with no arguments), or a command (argv list) run as a
    whole process, start-up included, in `cwd` with `env` (default: this interpreter's bin dir first on PATH). A
    command that fails raises with the tail of its output."""
    if callable(what):
        t0 = time.perf_counter()
        what()
        return time.perf_counter() - t0
    t0 = time.perf_counter()
    proc = subprocess.run(list(what), cwd=cwd, env=env or venv_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, what))} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                             f"{proc.stderr[-2000:]}")
    return seconds


@dataclass
class Paired:
    """The result of `paired`: median seconds of each side, the median of the per-pair ratios candidate/baseline
    (< 1: the candidate is faster) and its inverse `speedup`, and every run's seconds."""

    baseline_s: float
    candidate_s: float
    ratio: float
    speedup: float
    reps: int
    baseline_runs: list[float] = field(default_factory=list)
    candidate_runs: list[float] = field(default_factory=list)

    def row(self, prefix: str = "") -> dict:
        """The figures as `emit` fields (seconds rounded to 0.1 ms; `prefix` names a second comparison)."""
        d = asdict(self)
        return {f"{prefix}{k}": ([round(x, 4) for x in v] if isinstance(v, list) else
                                 round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


def paired(baseline: Runnable, candidate: Runnable, reps: int = 5, warmup: int = 1, *, cwd: Path | None = None,
           env: dict | None = None, before: Callable[[str], Any] | None = None) -> Paired:
    """Time `baseline` and `candidate` (callables or commands, as `time_once` runs them) interleaved: after `warmup`
    untimed runs of each, `reps` pairs, each pair in a seeded random order (so a drift in the machine's speed, or
    an order effect, hits both sides alike). `before(side)` ("baseline" or "candidate"), when given, runs untimed
    before every run (e.g. to reset a cache). Guarantees: both sides ran `reps` timed times; `ratio` is the median of
    the `reps` per-pair ratios candidate/baseline, not a ratio of medians."""
    if reps < 1:
        raise ValueError("reps must be at least 1")
    sides = {"baseline": baseline, "candidate": candidate}

    def one(side: str) -> float:
        if before is not None:
            before(side)
        return time_once(sides[side], cwd, env)

    for _ in range(warmup):
        for side in sides:
            one(side)
    order = random.Random(0)
    runs: dict[str, list[float]] = {"baseline": [], "candidate": []}
    for _ in range(reps):
        pair = ["baseline", "candidate"]
        order.shuffle(pair)
        for side in pair:
            runs[side].append(one(side))
    ratios = [c / b for b, c in zip(runs["baseline"], runs["candidate"])]
    ratio = statistics.median(ratios)
    return Paired(statistics.median(runs["baseline"]), statistics.median(runs["candidate"]), ratio,
                  1 / ratio if ratio else float("inf"), reps, runs["baseline"], runs["candidate"])


# ---------------------------------------------------------------------------------------------------- reporting

def _bench_name(frame_globals: dict) -> str:
    """The calling bench's name: its module path under bench/ (`head_change_cost`,
    `not_headstart_path.minilm_transfer`), whether it runs as `python -m bench.x` or was imported."""
    spec = frame_globals.get("__spec__")
    name = spec.name if spec is not None else frame_globals.get("__name__", "bench")
    if name == "__main__":
        name = Path(frame_globals.get("__file__", "bench")).stem
    return name.removeprefix("bench.")


def emit(question: str, bench: str | None = None, **fields) -> dict:
    """Report one result: a JSON object {"bench", "question", **fields, "at"} printed on one stdout line and appended
    to bench/out/<bench>.jsonl (one line per row, never rewritten). `bench` defaults to the calling bench module's
    name. Values that JSON cannot hold are written as strings. Returns the row."""
    name = bench or _bench_name(inspect.stack()[1].frame.f_globals)
    row = {"bench": name, "question": question, **fields,
           "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    line = json.dumps(row, default=str)
    print(line, flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / f"{name}.jsonl", "a", encoding="utf-8") as f:
        f.write(line + "\n")
    return row


# ------------------------------------------------------------------------------------------- fresh processes

def run_child(module: str, *args: str, cwd: Path = REPO, env: dict | None = None, check: bool = True,
              stderr=None) -> dict:
    """Run `python -m <module> --child <args>` (a function of the bench itself, in a fresh interpreter: its start-up
    and imports are its own) from `cwd`; return the JSON object of the last stdout line that starts with "{" (what
    the child printed with `reply`). stderr passes through unless `stderr` is given. With `check`, a failed child
    raises; without, its result is {"error": ...}."""
    proc = subprocess.run([sys.executable, "-m", module, "--child", *map(str, args)], cwd=cwd,
                          env=env or venv_env(), stdout=subprocess.PIPE, stderr=stderr, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        if check:
            raise AssertionError(f"python -m {module} --child failed ({proc.returncode}): {proc.stdout[-2000:]}")
        return {"error": f"child exited with status {proc.returncode}"}
    return json.loads(lines[-1])


def reply(result: dict) -> None:
    """A child's answer to `run_child`: one JSON line on stdout (logs go to stderr)."""
    print(json.dumps(result, default=str), flush=True)

