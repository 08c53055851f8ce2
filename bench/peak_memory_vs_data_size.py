"""Does peak memory stay flat as the data grows? Fashion-MNIST through ingest + feature extraction at 64 px.
(RESULTS.md section 4)

Run from the repository root:

    python -m bench.peak_memory_vs_data_size                          # 10 % (7k images) and 100 % (70k images)
    python -m bench.peak_memory_vs_data_size --quick                  # 1 % and 3 %, under a minute
    (options: --fractions F [F ...], --workdir bench/out/peak_memory_vs_data_size, --set KEY=VALUE for extra
    param overrides)

For each fraction a fresh scratch project (`bench._harness.scratch_project`, data "fmnist": the Debian package
`dataset-fashion-mnist` materialised as PNGs + labels.csv, idempotent, not timed as part of the run) is created in
`<workdir>/project-<fraction>/` (an old one is deleted: a warm manifest or feature store would measure cache hits),
and a fresh Python process (`python -m bench.peak_memory_vs_data_size --child ...`) runs the ingest and features
stages there, as the pipeline runs them, with the shipped params plus `ingest.group_pattern=null
backbone.input_size=64 ingest.val_fraction=0.1 ingest.test_fraction=0.15`. The child reports its own peak RSS
(VmHWM), so each number belongs to one run.
The CSV carries explicit splits (official test set; a seeded 10 % of the official train set as val), which ingest
keeps, so the two split fractions only apply to rows without one (none here).

One JSON row per fraction: images, ingest s, features s and the part of it spent on setup (backbone build, ONNX export
-- every project directory starts empty -- and the ONNX Runtime session; about 5 s here, whatever the data size),
images/s with and without setup, RSS after imports, peak RSS when setup ended, and peak RSS; then one with the
ratio peak RSS (largest fraction) / peak RSS (smallest fraction) against the 1.5x target. Benchmarks report, they do not
gate: the exit status is 0 whatever the numbers (2 only when it cannot start, e.g. the data package is missing).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from bench._harness import OUT, emit, reply, run_child, run_stage, scratch_project, stage_params
from tasks.core.errors import exit_on_user_error

QUESTION = "Does peak memory stay flat as the data grows?"
RSS_TARGET = 1.5
OVERRIDES = ["backbone.input_size=64", "ingest.val_fraction=0.1", "ingest.test_fraction=0.15"]


def _status_mb(field: str) -> float:
    """A VmXXX field of /proc/self/status in MB (falls back to ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(project: Path, extra: list[str]) -> dict:
    """Run the ingest and features stages in the scratch project `project` (this fresh process); return timings
    and this process's RSS."""
    import tasks.features as features
    from tasks.core.paths import ProjectPaths

    # time the fixed cost (backbone build + ONNX export + session) apart from extraction proper
    setup_s, setup_peak = 0.0, 0.0
    make_engine = features.make_engine

    def timed_make_engine(*args, **kwargs):
        nonlocal setup_s, setup_peak
        t0 = time.perf_counter()
        engine = make_engine(*args, **kwargs)
        setup_s += time.perf_counter() - t0
        setup_peak = _status_mb("VmHWM")
        return engine

    features.make_engine = timed_make_engine
    base = _status_mb("VmRSS")
    paths = ProjectPaths(project)
    params = stage_params(paths, extra)
    ing = run_stage("ingest", params, paths).result
    feat = run_stage("features", params, paths).result
    extract_s = feat.seconds - setup_s
    return {"n": ing.n_usable, "rejected": ing.n_rejected, "ingest_s": round(ing.seconds, 2),
            "features_s": round(feat.seconds, 2), "setup_s": round(setup_s, 2), "extracted": feat.extracted,
            "images_per_s": round(feat.samples_per_s, 1),
            "extract_images_per_s": round(feat.extracted / extract_s, 1) if extract_s > 0 else 0.0,
            "total_images_per_s": round(ing.n_usable / (ing.seconds + feat.seconds), 1),
            "rss_base_mb": round(base, 1), "rss_setup_peak_mb": round(setup_peak, 1),
            "peak_rss_mb": round(_status_mb("VmHWM"), 1)}


def run_fraction(fraction: float, workdir: Path, extra: list[str], quick: bool) -> dict:
    """A fresh scratch project with `fraction` of Fashion-MNIST, then ingest + features in a fresh process."""
    tag = f"{fraction:g}"
    t0 = time.perf_counter()
    paths = scratch_project(workdir / f"project-{tag}", "fmnist", fraction=fraction, overrides=OVERRIDES)
    out = {"fraction": fraction, "prepare_s": round(time.perf_counter() - t0, 1)}
    t0 = time.perf_counter()
    result = run_child(__spec__.name, paths.root, *[a for s in extra for a in ("--set", s)], check=False)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    row = {**out, **result}
    emit(QUESTION, **row, quick=quick)
    return row


def report(results: list[dict], quick: bool) -> None:
    """Emit the peak-RSS ratio (largest / smallest fraction) against the target, and the extraction-speed ratio."""
    ok = sorted((r for r in results if "error" not in r), key=lambda r: r["fraction"])
    if len(ok) < 2 or ok[0]["fraction"] == ok[-1]["fraction"]:
        emit(QUESTION, error="need two successful runs at different fractions for a ratio", quick=quick)
        return
    small, large = ok[0], ok[-1]
    ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
    speed = (large["extract_images_per_s"] / small["extract_images_per_s"]
             if small["extract_images_per_s"] else float("nan"))
    emit(QUESTION, fractions=[small["fraction"], large["fraction"]], images=[small["n"], large["n"]],
         rss_ratio=round(ratio, 3), rss_target=RSS_TARGET, within_target=ratio <= RSS_TARGET,
         extract_images_per_s_ratio=round(speed, 3), quick=quick)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    """Parent: run every fraction in its own process and report. Child (--child PROJECT): one measurement."""
    ap = argparse.ArgumentParser(prog="python -m bench.peak_memory_vs_data_size", description=__doc__.splitlines()[0])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0], help="default: 0.1 1.0")
    ap.add_argument("--workdir", type=Path, default=OUT / "peak_memory_vs_data_size",
                    help="default: bench/out/peak_memory_vs_data_size")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra param override for the measured runs (e.g. features.batch_size=64)")
    ap.add_argument("--quick", action="store_true", help="fractions 0.01 and 0.03: checks the code path")
    ap.add_argument("--child", metavar="PROJECT", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        reply(child(args.child, args.set))
        return 0
    if args.quick:
        args.fractions = [0.01, 0.03]
    workdir = args.workdir.resolve()
    results = [run_fraction(fraction, workdir, args.set, args.quick) for fraction in args.fractions]
    report(results, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
