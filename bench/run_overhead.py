"""Benchmark 13b: what `headstart run` adds to `dvc repro` for the same head change, with the project's Prefect
server (stays up between runs) and with Prefect's temporary per-run server; and the cheap commands' start-up.

Uses the scratch project bench/head_change.py leaves (its demo data and caches), so run that first. Each round
changes `head.C` to a new value, then times, in turn:
  dvc:        `dvc repro --no-run-cache`;
  project:    `headstart run` (HEADSTART_PREFECT_SERVER=project; the server was started before the first round);
  temporary:  `headstart run` with HEADSTART_PREFECT_SERVER=temporary (a temporary API server per run).
Then `headstart --help` against `python -c pass` and `headstart predict one.png` against a bare
`python -c 'import onnxruntime, PIL, numpy'`, 5 times each. Prints medians and the differences.

Run:  .venv/bin/python bench/run_overhead.py [--rounds 3] [--workdir bench/out/head_change]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.core.params import write_overrides  # noqa: E402


def _timed(cmd: list[str], cwd: Path, **env) -> float:
    full_env = dict(os.environ) | env
    full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env['PATH']}"
    full_env.pop("PREFECT_API_URL", None)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{proc.stderr[-2000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "head_change")
    args = ap.parse_args()
    root = args.workdir
    if not (root / "dvc.lock").exists():
        raise SystemExit(f"{root} has no built project: run bench/head_change.py first")
    py = sys.executable
    cli = [py, "-m", "flows.cli"]
    _timed([*cli, "server", "start"], root)
    try:
        rows = []
        c = 1.0
        for i in range(args.rounds):
            row = {}
            for name, cmd, env in (("dvc", [py, "-m", "dvc", "repro", "--no-run-cache"], {}),
                                   ("project", [*cli, "run"], {"HEADSTART_PREFECT_SERVER": "project"}),
                                   ("temporary", [*cli, "run"], {"HEADSTART_PREFECT_SERVER": "temporary"})):
                c += 0.1
                write_overrides([f"head.C={c:.1f}"], root / "params.yaml")
                row[name] = _timed(cmd, root, **env)
            rows.append(row)
            print(f"round {i + 1}: " + ", ".join(f"{k} {v:.1f}s" for k, v in row.items()), flush=True)
    finally:
        _timed([*cli, "server", "stop"], root)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"\nhead change, median: dvc repro {med['dvc']:.1f}s; headstart run with the project's server "
          f"{med['project']:.1f}s (+{med['project'] - med['dvc']:.1f}s); with a temporary server "
          f"{med['temporary']:.1f}s (+{med['temporary'] - med['dvc']:.1f}s)")

    one_png = next((root / "data" / "raw").rglob("*.png"))
    pairs = {"--help": ([*cli, "--help"], [py, "-c", "pass"]),
             "predict one.png": ([*cli, "predict", str(one_png)], [py, "-c", "import onnxruntime, PIL, numpy"])}
    for name, (cmd, base) in pairs.items():
        a = statistics.median(_timed(cmd, root) for _ in range(5))
        b = statistics.median(_timed(base, root) for _ in range(5))
        print(f"{name}: {a:.2f}s vs {' '.join(base[1:])} {b:.2f}s (+{a - b:.2f}s)")


if __name__ == "__main__":
    main()
