"""Does ingest's hash cache save time when ingest re-runs over unchanged data? With the cache (a `stat` per file) vs
re-reading and re-hashing every file (the baseline: what ingest did before, and still does when
data/prepared/hashes.parquet is missing). (RESULTS.md section 10)

A scratch project on the clip-art demo data (or --source: a folder of class folders, or a CSV) runs the ingest
stage once (it validates every image and writes manifest and cache); then the two re-runs are paired
(`bench._harness.paired`), the cache deleted before each baseline run. Both runs have the previous manifest, so
neither decodes an image again; the difference is reading and hashing. One JSON row: medians and their ratio.

Run:  python -m bench.ingest_hash_cache_savings [--source PATH] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench._harness import OUT, emit, paired, run_stage, scratch_project, stage_params

QUESTION = "Does ingest's hash cache save time when ingest re-runs over unchanged data?"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, help="a folder (<class>/<files>) or a CSV; default: the clip-art demo")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=OUT / "ingest_hash_cache_savings")
    ap.add_argument("--quick", action="store_true", help="10 clip-art images per class, 2 pairs: checks the code path")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats = 2
    source = args.source.resolve() if args.source else None
    if source is not None and source.is_file():  # a CSV stays where it is: its paths are relative to it
        paths = scratch_project(args.workdir / "project", None, overrides=[f"ingest.source={source}"])
    else:
        paths = scratch_project(args.workdir / "project", source or "clipart",
                                per_class=10 if args.quick and source is None else None)
    params = stage_params(paths)
    first = run_stage("ingest", params, paths)  # validates every image, writes manifest and cache

    def drop_cache(side: str) -> None:
        if side == "baseline":
            paths.hashes.unlink(missing_ok=True)

    r = paired(lambda: run_stage("ingest", params, paths), lambda: run_stage("ingest", params, paths),
               reps=args.repeats, warmup=0, before=drop_cache)
    emit(QUESTION, baseline="re-hash every file (no hash cache)", candidate="hash cache",
         files=first.result.n_files, source=str(source or "clip-art demo"), **r.row(), quick=args.quick)


if __name__ == "__main__":
    main()
