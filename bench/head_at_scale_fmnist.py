"""Is a head on cached features cheap next to extracting them, at Fashion-MNIST's 70,000 images? (issue 24; RESULTS.md
section 24)

One Fashion-MNIST project (all 70,000 images: 54k train, 6k val, the official 10k test set; 64 px; the shipped
backbone, EfficientNet-Lite0, and params), its stages run one at a time as dvc.yaml runs them (`python -m
tasks.<stage>` in the project folder, a fresh process each, start-up included):

- ingest, then features: the features wall (the baseline of the ratios);
- head with head.C=0.1, then with head.C=auto (the regularisation path over head.C_grid, head.cv_folds folds): each
  one's wall, its ratio to the features wall (targets <= 0.1x and <= 0.3x), its peak RSS (the stage process's own
  ru_maxrss, from wait4; target <= 0.8 GB) and head.json's fit record (iterations, passes, seconds, C scores);
- where the fixed-C head's time goes: the same stage function once more in a fresh process of this bench (`--child
  profile`), its feature reads, per-chunk loss/gradient sums, moments and accuracy passes timed and its bytes read
  counted;
- test accuracy of the C=0.1 head next to scikit-learn's LogisticRegression (lbfgs, same C, same max_iter and tol) fitted
  on the same standardised train features (the head's own mean and scale, float64), and how often their test
  predictions agree (`--child sklearn`; targets: >= 0.86, within 0.3 points). scikit-learn's fit takes minutes and
  does not depend on headstart's code: its test predictions are kept under `<workdir>/runs-<fraction>/` and reused by a
  later run on the same features and C (`sklearn_cached`; `--refit-reference` refits).

The project's tasks/ is a snapshot of the checkout's, taken when the bench starts; the stage processes and both
children run it (the children in the project folder, the repository on PYTHONPATH for `bench`), and every row names
it (`commit`, `head_files_uncommitted`, `head_code_digest`), so a solver edited while the bench runs cannot mix in.

Extracting 70k images takes a few minutes on 2 cores, so the project is cached: `<workdir>/project-<fraction>` is
reused when its manifest exists (its tasks/ and params.yaml are refreshed from the checkout, so the code measured is
the checkout's; ingest's hash cache and the incremental features stage then do no work). The features wall of the run
that extracted the cache is kept in `<workdir>/project-<fraction>/features_cold.json` and reported on later runs with
its date (`features_cached: true`); `--rebuild` starts from an empty project. Each head run's head.json/head.npz is
kept under `<workdir>/runs/`.

Run:  python -m bench.head_at_scale_fmnist            (options: --fraction 1.0, --C 0.1, --rebuild, --refit-reference,
      --workdir bench/out/head_at_scale_fmnist; --quick: 5 % of the data, checks the code path)
Benchmarks report, they do not gate: the exit status is 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench._harness import OUT, emit, reply, run_child, scratch_project, stage_params
from tests.scratch_project import REPO, venv_env

LAUNCHER = Path(__file__).with_name("_rusage_launcher.py")
QUESTION = "Is a head on cached features cheap next to extracting them (Fashion-MNIST 70k, 64 px)?"
OVERRIDES = ["backbone.input_size=64"]
TARGETS = {"head_fixed_x_features": 0.1, "head_auto_x_features": 0.3, "peak_rss_mb": 800.0,
           "test_accuracy": 0.86, "accuracy_gap_points": 0.3}


# ------------------------------------------------------------------------------------------------ stage processes

def stage_process(name: str, root: Path, overrides: list[str] = (), log: Path | None = None) -> dict:
    """`python -m tasks.<name> -S ...` in the project at `root`, as dvc.yaml runs it: its wall seconds and its peak
    RSS in MiB (the process's own ru_maxrss, from wait4 in a small launcher process: bench/_rusage_launcher.py says
    why). Output goes to `log`. A failing stage raises."""
    cmd = [sys.executable, "-m", f"tasks.{name}", *[a for o in overrides for a in ("-S", o)]]
    log = log or root / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    report = log.with_suffix(".rusage.json")
    with open(log, "w", encoding="utf-8") as out:
        subprocess.run([sys.executable, str(LAUNCHER), str(report), *cmd], cwd=root, env=venv_env(), stdout=out,
                       stderr=subprocess.STDOUT, check=True)
    r = json.loads(report.read_text())
    if r["code"] != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r['code']}):\n{log.read_text()[-3000:]}")
    return {"seconds": round(r["seconds"], 2), "peak_rss_mb": round(r["maxrss_kb"] / 1024, 1),
            "cpu_s": round(r["cpu_s"], 1), "load_avg_1min_after": round(os.getloadavg()[0], 2)}


def cached_project(workdir: Path, fraction: float, rebuild: bool = False):
    """(paths, reused) of the Fashion-MNIST project at `<workdir>/project-<fraction>`: reused when ingest already
    wrote its manifest (tasks/ and params.yaml refreshed from the checkout), else built from scratch."""
    dest = workdir.resolve() / f"project-{fraction:g}"
    reused = not rebuild and (dest / "data" / "prepared" / "manifest.parquet").is_file()
    if reused:
        shutil.rmtree(dest / "tasks", ignore_errors=True)
    paths = scratch_project(dest, "fmnist", fraction=fraction, overrides=OVERRIDES, fresh=not reused)
    return paths, reused


def head_code(root: Path) -> dict:
    """Which head code a project runs (its tasks/ is a snapshot of the checkout's, taken when the bench started):
    the checkout's commit, whether the head's files differed from it, and a digest of the snapshot's head files."""
    files = sorted([root / "tasks" / "head.py", *(root / "tasks" / "training").glob("*.py")])
    digest = hashlib.sha256(b"".join(f.name.encode() + f.read_bytes() for f in files)).hexdigest()[:12]
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "tasks/head.py", "tasks/training"],
                           capture_output=True, text=True).stdout.strip()
    return {"commit": commit, "head_files_uncommitted": bool(dirty), "head_code_digest": digest}


def project_child(module: str, kind: str, root: Path, *args) -> dict:
    """`run_child(module, kind, root, *args)` in the project folder `root` with the repository on PYTHONPATH: `tasks`
    is the project's snapshot (the code its stage processes run), `bench` and `tests` the checkout's."""
    env = venv_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return run_child(module, kind, root, *args, cwd=root, env=env)


def features_wall(paths) -> dict:
    """Run ingest and features (fresh processes). The features wall of a run that extracted rows is recorded in
    features_cold.json; a run on a cached store reports that record (`features_cached`) beside its own no-op wall."""
    from tasks.extraction.feature_store import open_store

    record_file = paths.root / "features_cold.json"
    ingest = stage_process("ingest", paths.root, log=paths.root / "logs" / "ingest.log")
    params = stage_params(paths)
    before = len(open_store(params, paths))
    feats = stage_process("features", paths.root, log=paths.root / "logs" / "features.log")
    after = len(open_store(params, paths))
    if after > before and before == 0:
        record = {"features_s": feats["seconds"], "features_peak_rss_mb": feats["peak_rss_mb"], "rows": after,
                  "ingest_s": ingest["seconds"], "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        record_file.write_text(json.dumps(record, indent=2))
        return record | {"features_cached": False}
    if not record_file.exists():
        raise SystemExit(f"{paths.root}: the feature store was already partly filled but no cold features wall was "
                         f"recorded; run with --rebuild")
    record = json.loads(record_file.read_text())
    return record | {"features_cached": True, "features_rerun_s": feats["seconds"], "ingest_rerun_s": ingest["seconds"]}


def head_run(paths, c: str, runs: Path) -> dict:
    """The head stage with head.C=`c` in a fresh process: wall, peak RSS, and head.json's record (kept in `runs`)."""
    tag = f"C={c}"
    r = stage_process("head", paths.root, [f"head.C={c}"], log=runs / f"head-{tag}.log")
    keep = runs / tag
    keep.mkdir(parents=True, exist_ok=True)
    for f in ("head.json", "head.npz"):
        shutil.copy(paths.models / f, keep / f)
    record = json.loads((keep / "head.json").read_text())
    fit = record.get("fit") or {}
    return {**r, "fit": fit, "n_train": record["n_train"], "train_accuracy": round(record["train_accuracy"], 4),
            "val_accuracy": round(record["val_accuracy"], 4) if record["val_accuracy"] is not None else None,
            "stage_seconds": round(record["seconds"], 2), "npz": str(keep / "head.npz")}


# ------------------------------------------------------------------------------------------------ children

def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def profile(root: Path, c: str) -> dict:
    """In this fresh process: the head stage function (`run_head`) with head.C=`c`, its parts timed: feature reads
    (plain file reads into the chunk buffer), per-chunk loss/gradient sums, moments, accuracy passes; bytes read."""
    import tasks.head as head_stage
    import tasks.training.chunk_sums as chunk_sums_mod
    import tasks.training.linear_head as linear_head_mod
    from tasks.core.paths import ProjectPaths
    from tasks.training.feature_rows import FeatureRows

    spent = {"read_s": 0.0, "sums_s": 0.0, "moments_s": 0.0, "accuracy_s": 0.0, "chunks_summed": 0}
    read_bytes = {"n": 0}

    def timed(key, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - t0
        return wrapper

    original_read = FeatureRows._read

    def read(self, *args):
        before = self.bytes_read
        t0 = time.perf_counter()
        try:
            return original_read(self, *args)
        finally:
            spent["read_s"] += time.perf_counter() - t0
            read_bytes["n"] += self.bytes_read - before

    original_sums = chunk_sums_mod.chunk_sums

    def sums(*args):
        spent["chunks_summed"] += 1
        return original_sums(*args)

    FeatureRows._read = read
    chunk_sums_mod.chunk_sums = timed("sums_s", sums)
    original_standardisation = linear_head_mod.standardisation
    linear_head_mod.standardisation = timed("moments_s", original_standardisation)
    head_stage.accuracy = timed("accuracy_s", head_stage.accuracy)
    paths = ProjectPaths(root)
    params = stage_params(paths, [f"head.C={c}"])
    rss0 = _vm("VmRSS")
    t0 = time.perf_counter()
    summary = head_stage.run_head(params, paths)
    total = time.perf_counter() - t0
    record = json.loads((paths.models / "head.json").read_text())
    fit = record.get("fit") or {}
    train, _, _ = head_stage.split_feature_rows(params, paths, "train")
    train_bytes = train.n * train.dim * 4
    passes = fit.get("passes") or 0
    # read_s counts every read (the solver's passes, moments, accuracy); sums_s is the per-chunk arithmetic of the
    # solver's passes only (it gets rows already read): the two are disjoint; moments_s and accuracy_s include reads
    return {"C": c, "run_head_s": round(total, 2), "fit_s": round(fit.get("seconds", float("nan")), 2),
            "iterations": fit.get("iterations"), "passes": passes,
            "read_s": round(spent["read_s"], 2), "sums_s": round(spent["sums_s"], 2),
            "moments_s": round(spent["moments_s"], 2), "accuracy_s": round(spent["accuracy_s"], 2),
            "chunks_summed": spent["chunks_summed"], "chunks_per_pass": train.n_chunks(),
            "bytes_read_gb": round(read_bytes["n"] / 1e9, 3), "train_matrix_gb": round(train_bytes / 1e9, 3),
            "sums_s_per_pass": round(spent["sums_s"] / passes, 4) if passes else None,
            "fit_s_per_pass": round(fit.get("seconds", 0) / passes, 4) if passes else None,
            "outside_sums_and_reads_s": round(total - spent["sums_s"] - spent["read_s"], 2),
            "memory_mb": params.head.memory_mb, "n_train": summary.n_train,
            "rss_before_mb": round(rss0, 1), "peak_rss_mb": round(_vm("VmHWM"), 1)}


def sklearn_reference(root: Path, c: float, npz: Path, cache: Path) -> dict:
    """In this fresh process: test accuracy of the head at `npz` and of scikit-learn's LogisticRegression at the same
    C on the same standardised features (the head's mean and scale, float64), and the agreement of their test
    predictions. scikit-learn's test predictions are kept in `cache` (its fit does not depend on headstart's code)
    and reused by a later run on the same features and C."""
    import numpy as np

    from tasks.core.paths import ProjectPaths
    from tasks.dataset.manifest import read_manifest, split_rows
    from tasks.extraction.feature_store import open_store
    from tasks.model.head_format import Head

    paths = ProjectPaths(root)
    params = stage_params(paths)
    head = Head.load(npz)
    store = open_store(params, paths)
    manifest = read_manifest(paths)
    train, test = split_rows(manifest, "train"), split_rows(manifest, "test")
    yt = test["label"].astype(str).to_numpy()
    ours = np.array(head.classes)[head.logits(store.get(test["sha256"].tolist())).argmax(1)]
    key = f"{store.fingerprint} C={c:g} train={len(train)} test={len(test)}"
    found = np.load(cache, allow_pickle=False) if cache.is_file() else None
    if found is not None and str(found["key"]) == key:
        theirs, fit = found["predicted"], json.loads(str(found["fit"]))
        fit["sklearn_cached"] = True
    else:
        from sklearn.linear_model import LogisticRegression

        def standardised(rows):
            return (store.get(rows["sha256"].tolist()).astype(np.float64) - head.mean) / head.scale

        x, y = standardised(train), train["label"].astype(str).to_numpy()
        model = LogisticRegression(C=c, max_iter=params.head.max_iter, tol=1e-4)
        t0 = time.perf_counter()
        model.fit(x, y)
        fit = {"sklearn_fit_s": round(time.perf_counter() - t0, 1), "sklearn_iterations": int(np.max(model.n_iter_)),
               "sklearn_dtype": "float64"}
        theirs = model.predict(standardised(test)).astype(str)
        np.savez(cache, key=key, predicted=theirs, fit=json.dumps(fit))
        fit["sklearn_cached"] = False
    ours_acc, sk_acc = float((ours == yt).mean()), float((theirs == yt).mean())
    return {"C": c, "n_train": len(train), "n_test": len(yt), "test_accuracy": round(ours_acc, 4),
            "sklearn_test_accuracy": round(sk_acc, 4), "gap_points": round(100 * abs(ours_acc - sk_acc), 2),
            "agreement": round(float((ours == theirs).mean()), 4), **fit}


# ------------------------------------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.head_at_scale_fmnist", description=__doc__.splitlines()[0])
    ap.add_argument("--fraction", type=float, default=1.0, help="share of Fashion-MNIST (default 1.0: 70,000 images)")
    ap.add_argument("--C", default="0.1", help="the fixed C (default 0.1)")
    ap.add_argument("--rebuild", action="store_true", help="build the project from scratch (re-extract)")
    ap.add_argument("--refit-reference", action="store_true",
                    help="refit scikit-learn's model even if its predictions from an earlier run are kept")
    ap.add_argument("--workdir", type=Path, default=OUT / "head_at_scale_fmnist")
    ap.add_argument("--quick", action="store_true", help="5 %% of the data: checks the code path")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, root, *rest = args.child
        if kind == "profile":
            reply(profile(Path(root), rest[0]))
        else:
            reply(sklearn_reference(Path(root), float(rest[0]), Path(rest[1]), Path(rest[2])))
        return 0
    if args.quick:
        args.fraction = 0.05
    paths, reused = cached_project(args.workdir, args.fraction, args.rebuild)
    code = head_code(paths.root)
    runs = paths.root.parent / f"runs-{args.fraction:g}"
    feats = features_wall(paths)
    fixed = head_run(paths, args.C, runs)
    auto = head_run(paths, "auto", runs)
    base = feats["features_s"]
    common = {"fraction": args.fraction, "rows": feats["rows"], "quick": args.quick, "project_reused": reused,
              **code}
    emit(QUESTION, what="features", **common, **{k: v for k, v in feats.items() if k != "rows"})
    for name, r in (("head C fixed", fixed), ("head C=auto", auto)):
        fit = r.pop("fit")
        emit(QUESTION, what=name, **common, head_s=r["seconds"], features_s=base,
             x_features=round(r["seconds"] / base, 3), peak_rss_mb=r["peak_rss_mb"],
             fit_s=round(fit.get("seconds", float("nan")), 2), C=fit.get("C"), iterations=fit.get("iterations"),
             passes=fit.get("passes"), grad_norm=fit.get("grad_norm"), converged=fit.get("converged"),
             C_scores=fit.get("C_scores"), cv_folds=fit.get("cv_folds"),
             **{k: v for k, v in r.items() if k not in ("seconds", "peak_rss_mb")})
        r["fit"] = fit
    prof = project_child(__spec__.name, "profile", paths.root, args.C)
    emit(QUESTION, what="head C fixed, profiled in process", **common, **prof)
    reference = runs / f"sklearn-C={args.C}.npz"
    if args.refit_reference:
        reference.unlink(missing_ok=True)
    ref = project_child(__spec__.name, "sklearn", paths.root, args.C, fixed["npz"], reference)
    emit(QUESTION, what="test accuracy vs scikit-learn", **common, **ref)
    checks = {"head_fixed_x_features": fixed["seconds"] / base, "head_auto_x_features": auto["seconds"] / base,
              "peak_rss_mb": max(fixed["peak_rss_mb"], auto["peak_rss_mb"])}
    met = {"head_fixed_x_features": checks["head_fixed_x_features"] <= TARGETS["head_fixed_x_features"],
           "head_auto_x_features": checks["head_auto_x_features"] <= TARGETS["head_auto_x_features"],
           "peak_rss_mb": checks["peak_rss_mb"] <= TARGETS["peak_rss_mb"],
           "test_accuracy": ref["test_accuracy"] >= TARGETS["test_accuracy"],
           "accuracy_gap_points": ref["gap_points"] <= TARGETS["accuracy_gap_points"]}
    emit(QUESTION, what="summary", **common, features_s=base, head_fixed_s=fixed["seconds"],
         head_auto_s=auto["seconds"], **{k: round(v, 3) for k, v in checks.items()},
         test_accuracy=ref["test_accuracy"], sklearn_test_accuracy=ref["sklearn_test_accuracy"],
         agreement=ref["agreement"], targets=TARGETS, met=met)
    return 0


if __name__ == "__main__":
    sys.exit(main())
