"""Which head is best on cached features? Logistic regression (fixed C, C by CV), linear SVM, MLP: test accuracy,
macro F1 and fit time. (RESULTS.md section 7)

Run from the repository root, on a project whose ingest and features stages ran (e.g. the project
`python -m bench.finetune_vs_frozen_head` builds), or without --project on a new scratch project of the clip-art
demo data (ingest and features run first):

    python -m bench.which_head_on_cached_features --project bench/out/finetune_vs_frozen_head/clipart-0.1/project
    python -m bench.which_head_on_cached_features --project bench/out/finetune_vs_frozen_head/fmnist-1/project \
        --heads logreg linear_svm mlp
    python -m bench.which_head_on_cached_features --quick      # 10 clip-art images per class at 64 px

The project's manifest and feature store are linked (read-only) into `<workdir>/heads-project`, so a run beside a
fine-tuning run on the same project cannot disturb it. Each head is fitted by the head stage and scored on the test
split on cached features (`evaluate.artifact=head`) by the evaluate stage, each as the pipeline runs it
(`bench._harness.run_stage`): exactly what ships when `finetune.strategy=none`. One JSON row per head: val and test
accuracy, test macro F1, fit seconds, and test accuracy relative to the first head.
Benchmarks report, they do not gate: the exit status is 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from bench._harness import OUT, emit, run_stage, scratch_project, stage_params
from tasks.core.errors import UserError, exit_on_user_error

QUESTION = "Which head is best on cached features?"
HEADS = {
    "logreg": ["head.type=logreg"],
    "logreg_auto": ["head.type=logreg", "head.C=auto"],
    "linear_svm": ["head.type=linear_svm", "head.C=0.01"],
    "mlp": ["head.type=mlp"],
}


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, help="default: a new scratch project of the clip-art demo data")
    ap.add_argument("--heads", nargs="*", default=list(HEADS), choices=list(HEADS))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="params of the project")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--quick", action="store_true", help="a scratch project of 10 clip-art images per class at 64 px, "
                                                         "logreg and linear_svm: checks the code path")
    args = ap.parse_args(argv)
    from tasks.core.paths import ProjectPaths

    if args.project is None:
        per_class, size = (10, ["backbone.input_size=64"]) if args.quick else (None, [])
        if args.quick and args.heads == list(HEADS):
            args.heads = ["logreg", "linear_svm"]
        built = scratch_project(OUT / "which_head_on_cached_features" / "project", "clipart", per_class=per_class,
                                overrides=size)
        for name in ("ingest", "features"):
            run_stage(name, paths=built)
        args.project = built.root
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
    shutil.copy(src.root / "params.yaml", paths.root / "params.yaml")
    first = None
    for name in args.heads:
        params = stage_params(paths, args.set + HEADS[name] + ["evaluate.artifact=head", "finetune.strategy=none"])
        h = run_stage("head", params, paths)
        run_stage("finetune", params, paths)
        e = run_stage("evaluate", params, paths).result
        first = e.accuracy if first is None else first
        emit(QUESTION, head=name, val_accuracy=h.result.val_accuracy, test_accuracy=e.accuracy,
             test_f1_macro=e.f1_macro, fit_s=round(h.seconds, 1), n_train=h.result.n_train, n_test=e.n,
             test_accuracy_vs_first=round(e.accuracy / first, 4), first=args.heads[0], project=str(src.root),
             quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
