"""Does fine-tuning (LP-FT, each strategy) beat the frozen head? Test accuracy, macro F1 and wall time, one project.
(RESULTS.md section 8)

Run from the repository root:

    python -m bench.finetune_vs_frozen_head --dataset fmnist --fraction 1.0 --strategies full
    python -m bench.finetune_vs_frozen_head --dataset fmnist --fraction 0.1 --strategies freeze last_n full gradual
    python -m bench.finetune_vs_frozen_head --dataset clipart --strategies last_n full gradual
    python -m bench.finetune_vs_frozen_head --quick      # 10 clip-art images per class at 64 px, last_n, 1 epoch
    (options: --workdir bench/out/finetune_vs_frozen_head/<dataset>-<fraction>, --set KEY=VALUE [...] for every
    run, --tag NAME=KEY=VALUE to add a strategy variant, e.g. --tag full_bn_train=finetune.bn=train)

The project is a scratch project (`bench._harness.scratch_project`) built once: ingest, features and the head stage
(the "frozen" row: the head on cached features, scored on the test split exactly as `evaluate.artifact=head` does).
Then each strategy runs the fine-tune stage (with `finetune.strategy=<s>` plus the overrides), export (ONNX,
parity-gated) and evaluate (the exported ONNX through ONNX Runtime from the test image files) in this process, in
sequence, each stage as the pipeline runs it (`bench._harness.run_stage`): every row is what a user would ship.

Datasets: `fmnist` materialises the Debian package `dataset-fashion-mnist` (official 10k test set; a seeded 10 % of
the official training set as val; `--fraction` keeps a stratified share of both) at 64 px by default; `clipart` is
the demo data (`tasks.dataset.clipart_demo`, openclipart-png, 7 classes) at the shipped 224 px.

One JSON row per result (`bench._harness.emit`): val accuracy (of the kept model), test accuracy, test macro F1,
which model the stage kept, epochs run, the stage's wall time, and the ratio of the row's test accuracy to the
frozen head's. Benchmarks report, they do not gate: the exit status is 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench._harness import OUT, emit, run_stage, scratch_project, stage_params
from tasks.core.errors import exit_on_user_error

QUESTION = "Does fine-tuning beat the frozen head?"

DATASETS = {
    "fmnist": ["backbone.input_size=64", "backbone.resize=squash"],
    "clipart": [],
}


def _row(name: str, params, paths, seconds: float, finetune: dict | None) -> dict:
    s = run_stage("evaluate", params, paths).result
    head = json.loads((paths.models / "head.json").read_text())
    ft = finetune or {}
    return {"row": name, "kept": ft.get("kept", "head"), "best_epoch": ft.get("best_epoch", 0),
            "epochs_run": ft.get("epochs_run", 0),
            "val_accuracy": ft.get("best", {}).get("val_accuracy", head.get("val_accuracy")),
            "test_accuracy": s.accuracy, "test_f1_macro": s.f1_macro, "n_test": s.n,
            "scored": params.evaluate.artifact, "seconds": round(seconds, 1)}


def run(dataset: str, fraction: float, strategies: list[str], tags: dict[str, list[str]], extra: list[str],
        workdir: Path, per_class: int | None = None) -> list[dict]:
    """Build the project once, then score the frozen head and each strategy on the test split; emit each row."""
    base = DATASETS[dataset] + extra
    paths = scratch_project(workdir / "project", dataset, per_class=per_class, fraction=fraction, overrides=base)

    def params_for(more: list[str]):
        return stage_params(paths, more)

    params = params_for(["finetune.strategy=none", "evaluate.artifact=head"])
    build_s = sum(run_stage(name, params, paths).seconds for name in ("ingest", "features", "head"))
    run_stage("finetune", params, paths)  # strategy none: records that the head ships
    common = {"dataset": dataset, "fraction": fraction, "overrides": base}
    rows = [_row("frozen head (logreg on cached features)", params, paths, build_s, None)]
    frozen = rows[0]["test_accuracy"]
    emit(QUESTION, **rows[0], test_accuracy_vs_frozen=1.0, **common)
    variants = {s: [f"finetune.strategy={s}"] for s in strategies} | tags
    for name, more in variants.items():
        params = params_for(more)
        ft = run_stage("finetune", params, paths)
        run_stage("export", params, paths)
        rows.append(_row(name, params, paths, ft.seconds, ft.result))
        emit(QUESTION, **rows[-1], test_accuracy_vs_frozen=round(rows[-1]["test_accuracy"] / frozen, 4), **common)
    return rows


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="fmnist")
    ap.add_argument("--fraction", type=float, default=0.1, help="fmnist: share of each official set")
    ap.add_argument("--strategies", nargs="*", default=["freeze", "last_n", "full", "gradual"])
    ap.add_argument("--tag", action="append", default=[], metavar="NAME=KEY=VALUE[,KEY=VALUE]",
                    help="an extra row: a named variant with its own overrides (comma-separated)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--quick", action="store_true",
                    help="clip-art, 10 images per class at 64 px, last_n for 1 epoch: checks the code path")
    args = ap.parse_args(argv)
    per_class = None
    if args.quick:
        args.dataset, args.strategies, per_class = "clipart", ["last_n"], 10
        args.set = ["backbone.input_size=64", "finetune.epochs=1", *args.set]
    tags = {}
    for t in args.tag:
        name, _, rest = t.partition("=")
        tags[name] = rest.split(",")
    workdir = args.workdir or OUT / "finetune_vs_frozen_head" / f"{args.dataset}-{args.fraction:g}"
    run(args.dataset, args.fraction, args.strategies, tags, args.set, workdir, per_class)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
