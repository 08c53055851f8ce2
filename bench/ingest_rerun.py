"""Re-running ingest over unchanged data: with the hash cache (a `stat` per file) vs re-reading and re-hashing every
file (the baseline: what ingest did before, and still does when data/prepared/hashes.parquet is missing).

Both runs have the previous manifest, so neither decodes an image again; the difference is reading and hashing.
`python bench/ingest_rerun.py --source data/raw [--repeats 5]` prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tasks.core.params import load_params
from tasks.core.paths import ProjectPaths
from tasks.core.progress import log
from tasks.ingest import run_ingest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=Path("data/raw"))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    params = load_params(overrides=[f"ingest.source={args.source.resolve()}"])
    with tempfile.TemporaryDirectory() as tmp:
        paths = ProjectPaths(Path(tmp))
        run_ingest(params, paths)  # the first ingest: validates every image, writes manifest and cache
        times: dict[str, list[float]] = {"re-hash (no cache)": [], "hash cache": []}
        for _ in range(args.repeats):  # interleaved, so drift on a noisy machine hits both alike
            for name in times:
                if name.startswith("re-hash"):
                    paths.hashes.unlink()
                t0 = time.perf_counter()
                summary = run_ingest(params, paths)
                times[name].append(time.perf_counter() - t0)
    base, new = (statistics.median(v) for v in times.values())
    log(f"ingest re-run over {summary.n_files} unchanged files, median of {args.repeats}: re-hash {base:.2f} s, "
        f"hash cache {new:.2f} s -> {base / new:.1f}x faster")


if __name__ == "__main__":
    main()
