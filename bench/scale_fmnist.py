"""Benchmark 4: Fashion-MNIST through ingest + feature extraction at 64 px; does peak memory stay flat as data grows?

Run from the project root:

    .venv/bin/python bench/scale_fmnist.py                          # 10 % (7k images) and 100 % (70k images)
    .venv/bin/python bench/scale_fmnist.py --fractions 0.01 0.03    # smoke run, under a minute
    (options: --workdir bench/out/fmnist, --json-out FILE, --set KEY=VALUE for extra param overrides)

For each fraction the Debian package `dataset-fashion-mnist` is materialised as PNGs + labels.csv
(`tasks.dataset.fashion_mnist`, idempotent, not timed as part of the run) into `<workdir>/data-<fraction>/`, a fresh project
directory `<workdir>/project-<fraction>/` is created (an old one is deleted: a warm manifest or feature store would
measure cache hits), and a fresh subprocess runs `run_ingest` then `run_features` there with params defaults plus
`ingest.source=<csv> ingest.group_pattern=null backbone.input_size=64 ingest.val_fraction=0.1
ingest.test_fraction=0.15`. The child reports its own peak RSS (VmHWM), so each number belongs to one run.
The CSV carries explicit splits (official test set; a seeded 10 % of the official train set as val), which ingest
keeps, so the two split fractions only apply to rows without one (none here).

Printed: per fraction, images, ingest s, features s and the part of it spent on setup (backbone build, ONNX export
-- every project directory starts empty -- and the ONNX Runtime session; about 5 s here, whatever the data size),
images/s with and without setup, RSS after imports, peak RSS when setup ended, and peak RSS; then the ratio
peak RSS (largest fraction) / peak RSS (smallest fraction) against the 1.5x target. Benchmarks report, they do not
gate: the exit status is 0 whatever the numbers (2 only when it cannot start, e.g. the data package is missing).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tasks.core.errors import exit_on_user_error

ROOT = Path(__file__).resolve().parents[1]

RSS_TARGET = 1.5
OVERRIDES = ["ingest.group_pattern=null", "backbone.input_size=64", "ingest.val_fraction=0.1",
             "ingest.test_fraction=0.15"]


def _status_mb(field: str) -> float:
    """A VmXXX field of /proc/self/status in MB (falls back to ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(csv: Path, project: Path, extra: list[str]) -> dict:
    """Run ingest + features on `csv` in the empty project dir `project`; return timings and this process's RSS."""
    import tasks.features as features
    from tasks.core.params import load_params
    from tasks.core.paths import ProjectPaths
    from tasks.ingest import run_ingest

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
    params = load_params("/nonexistent", [f"ingest.source={csv}", *OVERRIDES, *extra])
    paths = ProjectPaths(project)
    ing = run_ingest(params, paths)
    feat = features.run_features(params, paths)
    extract_s = feat.seconds - setup_s
    return {"n": ing.n_usable, "rejected": ing.n_rejected, "ingest_s": round(ing.seconds, 2),
            "features_s": round(feat.seconds, 2), "setup_s": round(setup_s, 2), "extracted": feat.extracted,
            "images_per_s": round(feat.images_per_s, 1),
            "extract_images_per_s": round(feat.extracted / extract_s, 1) if extract_s > 0 else 0.0,
            "total_images_per_s": round(ing.n_usable / (ing.seconds + feat.seconds), 1),
            "rss_base_mb": round(base, 1), "rss_setup_peak_mb": round(setup_peak, 1),
            "peak_rss_mb": round(_status_mb("VmHWM"), 1)}


def run_fraction(fraction: float, workdir: Path, extra: list[str]) -> dict:
    """Materialise the data for `fraction`, then measure ingest + features in a fresh subprocess."""
    from tasks.dataset.fashion_mnist import materialise_fashion_mnist

    tag = f"{fraction:g}"
    prep = materialise_fashion_mnist(workdir / f"data-{tag}", fraction)
    project = workdir / f"project-{tag}"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", prep["csv"], str(project)]
    for s in extra:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)  # stderr (progress) passes through
    out = {"fraction": fraction, "prepare_s": round(prep["seconds"], 1), "wall_s": round(time.perf_counter() - t0, 1)}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {**out, "error": f"child exited with status {proc.returncode} (see its stderr above)"}
    return {**out, **json.loads(lines[-1])}


def report(results: list[dict]) -> dict:
    """Print the table and the peak-RSS ratio; return the summary for --json-out."""
    print(f"\n{'fraction':>8} {'images':>7} {'ingest s':>9} {'features s':>11} {'(setup s)':>10} {'img/s':>7} "
          f"{'extract img/s':>14} {'base MB':>8} {'setup MB':>9} {'peak RSS MB':>12}")
    for r in results:
        if "error" in r:
            print(f"{r['fraction']:>8g}  FAILED: {r['error']}")
            continue
        print(f"{r['fraction']:>8g} {r['n']:>7} {r['ingest_s']:>9.1f} {r['features_s']:>11.1f} {r['setup_s']:>10.1f} "
              f"{r['images_per_s']:>7.1f} {r['extract_images_per_s']:>14.1f} {r['rss_base_mb']:>8.0f} "
              f"{r['rss_setup_peak_mb']:>9.0f} {r['peak_rss_mb']:>12.0f}")
    print("img/s = the features stage's own figure (setup included); extract img/s leaves out setup "
          "(backbone build + ONNX export + session);\n"
          "base MB = RSS after imports; setup MB = peak RSS when setup ended (ingest included)")
    ok = sorted((r for r in results if "error" not in r), key=lambda r: r["fraction"])
    summary: dict = {"results": results, "rss_target": RSS_TARGET}
    if len(ok) >= 2 and ok[0]["fraction"] != ok[-1]["fraction"]:
        small, large = ok[0], ok[-1]
        ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
        speed = (large["extract_images_per_s"] / small["extract_images_per_s"]
                 if small["extract_images_per_s"] else float("nan"))
        within = ratio <= RSS_TARGET
        print(f"\npeak RSS {large['fraction']:g} / {small['fraction']:g} ({large['n']} vs {small['n']} images): "
              f"{ratio:.2f}x -> {'within' if within else 'NOT within'} {RSS_TARGET}x")
        print(f"extract img/s {large['fraction']:g} / {small['fraction']:g}: {speed:.2f}x")
        summary.update(rss_ratio=round(ratio, 3), within_target=within, images_per_s_ratio=round(speed, 3))
    else:
        print("\nneed two successful runs at different fractions for a ratio")
    return summary


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    """Parent: run every fraction in its own subprocess and report. Child (--child CSV PROJECT): one measurement."""
    ap = argparse.ArgumentParser(prog="python -m bench.scale_fmnist", description=__doc__.splitlines()[0])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0], help="default: 0.1 1.0")
    ap.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out" / "fmnist", help="default: bench/out/fmnist")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the results here as JSON")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra param override for the measured runs (e.g. features.batch_size=64)")
    ap.add_argument("--child", nargs=2, metavar=("CSV", "PROJECT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(Path(args.child[0]), Path(args.child[1]), args.set)), flush=True)
        return 0
    workdir = args.workdir.resolve()
    results = []
    for fraction in args.fractions:
        r = run_fraction(fraction, workdir, args.set)
        print(f"fraction {fraction:g}: {json.dumps(r)}", file=sys.stderr, flush=True)
        results.append(r)
    summary = report(results)
    if args.json_out:
        from tasks.core.files import atomic_write_text

        atomic_write_text(args.json_out, json.dumps({"fractions": args.fractions, **summary}, indent=2) + "\n")
        print(f"results -> {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
