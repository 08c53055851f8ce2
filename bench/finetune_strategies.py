"""Benchmark 7: frozen head vs fine-tuning strategies (LP-FT), test accuracy / macro F1 / wall time, one project.

Run from the project root:

    .venv/bin/python bench/finetune_strategies.py --dataset fmnist --fraction 1.0 --strategies full
    .venv/bin/python bench/finetune_strategies.py --dataset fmnist --fraction 0.1 --strategies freeze last_n full gradual
    .venv/bin/python bench/finetune_strategies.py --dataset clipart --strategies last_n full gradual
    (options: --workdir bench/out/finetune-<dataset>-<fraction>, --json-out FILE, --set KEY=VALUE [...] for every
    run, --tag NAME=KEY=VALUE to add a strategy variant, e.g. --tag full_bn_train=finetune.bn=train)

The project is built once: ingest, features and the head stage (the "frozen" row: the head on cached features,
scored on the test split exactly as `evaluate.artifact=head` does). Then each strategy runs the fine-tune stage (with
`finetune.strategy=<s>` plus the overrides), export (ONNX, parity-gated) and evaluate (the exported ONNX through ONNX
Runtime from the test image files) in this process, in sequence: every row is what a user would ship.

Datasets: `fmnist` materialises the Debian package `dataset-fashion-mnist` (official 10k test set; a seeded 10 % of
the official training set as val; `--fraction` keeps a stratified share of both) at 64 px by default; `clipart` is
the demo data (`tasks.dataset.clipart_demo`, openclipart-png, 7 classes) at 224 px with the demo's splits.

Printed and written as JSON: per row, val accuracy (of the kept model), test accuracy, test macro F1, which model
the stage kept, epochs run and the stage's wall time; plus the ratio of each row's test accuracy to the frozen head's.
Benchmarks report, they do not gate: the exit status is 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import tasks.core.env  # noqa: F401  (telemetry defaults before anything imports prefect/dvc)
from tasks.core.errors import exit_on_user_error

ROOT = Path(__file__).resolve().parents[1]

DATASETS = {
    "fmnist": ["ingest.group_pattern=null", "backbone.input_size=64", "backbone.resize=squash"],
    "clipart": [],
}


def _prepare(dataset: str, fraction: float, workdir: Path) -> list[str]:
    """Materialise the data; return the ingest overrides that point at it."""
    if dataset == "fmnist":
        from tasks.dataset.fashion_mnist import materialise_fashion_mnist

        prep = materialise_fashion_mnist(workdir / "data", fraction)
        return [f"ingest.source={prep['csv']}"]
    from tasks.dataset.clipart_demo import materialise

    raw = workdir / "project" / "data" / "raw"
    materialise(raw)
    return []


def _row(name: str, params, paths, seconds: float, finetune: dict | None) -> dict:
    from tasks.evaluate import run_evaluate

    s = run_evaluate(params, paths)
    metrics = json.loads((paths.metrics / "metrics.json").read_text())
    head = json.loads((paths.models / "head.json").read_text())
    ft = finetune or {}
    return {"row": name, "kept": ft.get("kept", "head"), "best_epoch": ft.get("best_epoch", 0),
            "epochs_run": ft.get("epochs_run", 0),
            "val_accuracy": ft.get("best", {}).get("val_accuracy", head.get("val_accuracy")),
            "test_accuracy": s.accuracy, "test_f1_macro": s.f1_macro, "n_test": s.n,
            "scored": metrics.get("artifact"), "seconds": round(seconds, 1)}


def run(dataset: str, fraction: float, strategies: list[str], tags: dict[str, list[str]], extra: list[str],
        workdir: Path) -> dict:
    """Build the project once, then score the frozen head and each strategy on the test split."""
    from tasks.core.params import apply_overrides, validate
    from tasks.core.paths import ProjectPaths
    from tasks.export import run_export
    from tasks.features import run_features
    from tasks.finetune import run_finetune
    from tasks.head import run_head
    from tasks.ingest import run_ingest

    workdir.mkdir(parents=True, exist_ok=True)
    base = DATASETS[dataset] + _prepare(dataset, fraction, workdir) + extra
    paths = ProjectPaths((workdir / "project").resolve())
    paths.root.mkdir(parents=True, exist_ok=True)

    def params_for(more: list[str]):
        return validate(apply_overrides({}, base + more), "bench overrides")

    params = params_for(["finetune.strategy=none", "evaluate.artifact=head"])
    t0 = time.perf_counter()
    run_ingest(params, paths)
    run_features(params, paths)
    run_head(params, paths)
    build_s = time.perf_counter() - t0
    run_finetune(params, paths)  # strategy none: records that the head ships
    rows = [_row("frozen head (logreg on cached features)", params, paths, build_s, None)]
    variants = {s: [f"finetune.strategy={s}"] for s in strategies} | tags
    for name, more in variants.items():
        params = params_for(more)
        t0 = time.perf_counter()
        ft = run_finetune(params, paths)
        train_s = time.perf_counter() - t0
        run_export(params, paths)
        rows.append(_row(name, params, paths, train_s, ft))
        print(json.dumps(rows[-1]), flush=True)
    frozen = rows[0]["test_accuracy"]
    for r in rows:
        r["test_accuracy_vs_frozen"] = round(r["test_accuracy"] / frozen, 4)
    return {"dataset": dataset, "fraction": fraction, "overrides": base, "rows": rows}


def _print_table(result: dict) -> None:
    print(f"\n{result['dataset']} (fraction {result['fraction']:g}); overrides: {' '.join(result['overrides'])}")
    print(f"{'row':44s} {'kept':9s} {'ep':>3s} {'val acc':>8s} {'test acc':>8s} {'macro F1':>8s} {'vs frozen':>9s} "
          f"{'wall s':>8s}")
    for r in result["rows"]:
        print(f"{r['row'][:44]:44s} {r['kept']:9s} {r['best_epoch']:>3d} {r['val_accuracy']:8.4f} "
              f"{r['test_accuracy']:8.4f} {r['test_f1_macro']:8.4f} {r['test_accuracy_vs_frozen']:9.3f}x "
              f"{r['seconds']:8.0f}")


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
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args(argv)
    tags = {}
    for t in args.tag:
        name, _, rest = t.partition("=")
        tags[name] = rest.split(",")
    workdir = args.workdir or ROOT / "bench" / "out" / f"finetune-{args.dataset}-{args.fraction:g}"
    result = run(args.dataset, args.fraction, args.strategies, tags, args.set, workdir)
    _print_table(result)
    out = args.json_out or workdir / "result.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
