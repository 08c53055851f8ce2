"""Benchmark 9: heads on cached features: logistic regression (fixed C, C by CV), linear SVM, MLP; test accuracy,
macro F1 and fit time.

Run from the project root, on a project whose ingest and features stages ran (e.g. a finetune_strategies workdir):

    .venv/bin/python bench/heads.py --project bench/out/finetune-clipart-0.1/project
    .venv/bin/python bench/heads.py --project bench/out/finetune-fmnist-1/project --heads logreg linear_svm mlp \
        --set backbone.input_size=64 --set ingest.group_pattern=null --set backbone.resize=squash

The project's manifest and feature store are linked (read-only) into `<workdir>/heads-project`, so a run beside a
fine-tuning run on the same project cannot disturb it. Each head is fitted by the head stage (`run_head`) and scored
on the test split on cached features (`evaluate.artifact=head`): exactly what ships when `finetune.strategy=none`.
Printed: per head, val and test accuracy, test macro F1, fit seconds, and test accuracy relative to the first head.
Benchmarks report, they do not gate: the exit status is 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import tasks.core.env  # noqa: F401
from tasks.core.errors import UserError, exit_on_user_error

HEADS = {
    "logreg": ["head.type=logreg"],
    "logreg_auto": ["head.type=logreg", "head.C=auto"],
    "linear_svm": ["head.type=linear_svm", "head.C=0.01"],
    "mlp": ["head.type=mlp"],
}


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, required=True)
    ap.add_argument("--heads", nargs="*", default=list(HEADS), choices=list(HEADS))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="params of the project")
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args(argv)
    from tasks.core.params import apply_overrides, load_params, validate
    from tasks.core.paths import ProjectPaths
    from tasks.evaluate import run_evaluate
    from tasks.finetune import run_finetune
    from tasks.head import run_head

    src = ProjectPaths(args.project.resolve())
    if not src.manifest.exists():
        raise UserError(f"{src.manifest} not found: run ingest and features in {src.root} first")
    paths = ProjectPaths((args.workdir or src.root.parent / "heads-project").resolve())
    shutil.rmtree(paths.root, ignore_errors=True)
    paths.prepared.mkdir(parents=True)
    shutil.copy(src.manifest, paths.manifest)
    if src.rejected.exists():
        shutil.copy(src.rejected, paths.rejected)
    os.symlink(src.features, paths.features)
    base = load_params(src.root / "params.yaml").model_dump(mode="json") if (src.root / "params.yaml").exists() else {}
    rows = []
    for name in args.heads:
        params = validate(apply_overrides(base, args.set + HEADS[name] + ["evaluate.artifact=head",
                                                                         "finetune.strategy=none"]), "bench")
        t0 = time.perf_counter()
        h = run_head(params, paths)
        fit_s = time.perf_counter() - t0
        run_finetune(params, paths)
        e = run_evaluate(params, paths)
        rows.append({"head": name, "val_accuracy": h.val_accuracy, "test_accuracy": e.accuracy,
                     "test_f1_macro": e.f1_macro, "fit_s": round(fit_s, 1), "n_train": h.n_train, "n_test": e.n})
    first = rows[0]["test_accuracy"]
    print(f"\n{'head':12s} {'val acc':>8s} {'test acc':>8s} {'macro F1':>8s} {'fit s':>7s} {'vs ' + rows[0]['head']:>12s}")
    for r in rows:
        r["test_accuracy_vs_first"] = r["test_accuracy"] / first
        print(f"{r['head']:12s} {r['val_accuracy']:8.4f} {r['test_accuracy']:8.4f} {r['test_f1_macro']:8.4f} "
              f"{r['fit_s']:7.1f} {r['test_accuracy_vs_first']:11.3f}x")
    (paths.root / "result.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
