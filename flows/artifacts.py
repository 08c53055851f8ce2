"""What a flow run decided, as Prefect artifacts: someone who opens the run in the Prefect UI sees the metrics with
their 95 % intervals, the gate's verdict and why, the data checks (drift, label audit, near-duplicates) and where the
plots are, without reading logs.

Each training and retrain flow run publishes (`publish_run_artifacts`, called from inside the flow):
- `headstart-metrics` (markdown): the headline metrics with intervals and n, the calibration error, the int8 variant,
  the data checks found on disk, links to the plots;
- `headstart-per-class` (table): precision, recall and F1 of each class with their intervals;
- `headstart-verdict` (markdown, retrain and promotion only): the action, the rule that decided, the paired
  differences per view, and any check recorded with the verdict (e.g. "drift", "audit");
- `headstart-comparison` (table, when there was a champion): one row per view of the paired comparison.

The files read are the stages' outputs (models/metrics/*.json, models/plots/*.png, models/metrics/drift.json and
data/reports/*.csv when the data checks wrote them); a file that is absent is left out, never an error.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.core.paths import ProjectPaths
from tasks.evaluate import HEADLINE

PLOTS = ("confusion_matrix", "reliability", "per_class_f1", "top_losses")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _with_interval(metrics: dict, name: str) -> str:
    low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
    return f"{metrics[name]:.3f} [{low:.3f}, {high:.3f}]" if low is not None else f"{metrics[name]:.3f}"


def _data_checks(paths: ProjectPaths) -> list[str]:
    """Lines on the data checks' outputs that exist: drift.json's verdict, the row count of each data/reports CSV."""
    lines = []
    drift = _read_json(paths.metrics / "drift.json")
    if drift is not None:
        shown = ", ".join(f"{k}: {v}" for k, v in drift.items() if not isinstance(v, (dict, list)))
        lines.append(f"- drift (`models/metrics/drift.json`): {shown}")
    reports = paths.root / "data" / "reports"
    for csv in sorted(reports.glob("*.csv")) if reports.is_dir() else []:
        with csv.open() as f:
            rows = max(sum(1 for _ in f) - 1, 0)  # minus the header
        lines.append(f"- `{csv.relative_to(paths.root).as_posix()}`: {rows} row(s)")
    return lines


def metrics_markdown(paths: ProjectPaths) -> str | None:
    """The metrics artifact's markdown, or None when evaluate has written no metrics."""
    metrics = _read_json(paths.metrics / "metrics.json")
    if metrics is None:
        return None
    how = _read_json(paths.metrics / "evaluation.json") or {}
    lines = [f"# Evaluation: {how.get('split', 'test')} split, n = {metrics.get('n')}", "",
             f"Scored: {how.get('artifact', '?')}", "",
             "95 % intervals in brackets (accuracy: Wilson; the others: seeded stratified bootstrap).", "",
             "| metric | value [95 % interval] |", "|---|---|"]
    lines += [f"| {m} | {_with_interval(metrics, m)} |" for m in HEADLINE if m in metrics]
    for extra in ("ece", "int8_accuracy", "int8_f1_macro", "int8_minus_fp32_accuracy"):
        if extra in metrics:
            lines.append(f"| {extra} | {_with_interval(metrics, extra)} |")
    checks = _data_checks(paths)
    if checks:
        lines += ["", "## Data checks", *checks]
    plots = [(name, paths.plots / f"{name}.png") for name in PLOTS if (paths.plots / f"{name}.png").exists()]
    if plots:
        lines += ["", "## Plots", *(f"- [{name.replace('_', ' ')}]({png.resolve().as_uri()}) "
                                     f"(`{png.relative_to(paths.root).as_posix()}`)" for name, png in plots)]
    return "\n".join(lines) + "\n"


def per_class_rows(paths: ProjectPaths) -> list[dict]:
    """One row per class from models/metrics/per_class.json, metrics rounded to 4 places."""
    per_class = _read_json(paths.metrics / "per_class.json") or {}
    return [{"class": c} | {k: (round(v, 4) if isinstance(v, float) else v) for k, v in scores.items()}
            for c, scores in per_class.items()]


def verdict_markdown(record: dict) -> str:
    """The gate's verdict as markdown: action, rule, the paired differences, and the checks recorded with it."""
    lines = [f"# Gate: {record.get('action')}", "", f"Champion now: v{record.get('champion_version')}", ""]
    if record.get("rule"):
        lines += [f"**Rule that decided:** {record['rule']}", ""]
    comparison = record.get("comparison") or {}
    if comparison:
        lines += [f"Paired comparison on `{record.get('metric')}` (challenger - champion, same samples), margin "
                  f"{record.get('margin')}:", "", "| view | challenger | champion | difference [95 %] | n | "
                  "predictions differ |", "|---|---|---|---|---|---|"]
        for view, c in comparison.items():
            lines.append(f"| {view} | {c['a']:.4f} | {c['b']:.4f} | {c['difference']:+.4f} [{c['ci_low']:+.4f}, "
                         f"{c['ci_high']:+.4f}] | {c['n']} | {c['disagree']} |")
    elif record.get("reason"):
        lines += [f"Reason: {record['reason']}"]
    for name in ("drift", "audit", "near_duplicates"):
        if isinstance(record.get(name), dict):
            shown = ", ".join(f"{k}: {v}" for k, v in record[name].items() if not isinstance(v, (dict, list)))
            lines += ["", f"**{name}:** {shown}"]
    if record.get("kept"):
        lines += ["", f"The challenger is kept in `{record['kept']}` (never deployable)."]
    return "\n".join(lines) + "\n"


def publish_run_artifacts(paths: ProjectPaths, verdict: dict | None = None) -> list[str]:
    """Publish this flow run's artifacts (module docstring); call from inside a flow run. A retrain that found
    nothing new publishes only that (the metrics on disk are an earlier run's). Returns the keys published."""
    if verdict is not None and verdict.get("action") == "nothing-new":
        create_markdown_artifact(f"# Retrain: nothing new\n\nNo new, changed or removed data; champion "
                                 f"v{verdict.get('champion_version')} stays.\n", key="headstart-verdict",
                                 description="promotion gate: nothing new")
        return ["headstart-verdict"]
    published = []
    text = metrics_markdown(paths)
    if text is not None:
        create_markdown_artifact(text, key="headstart-metrics", description="metrics with 95 % intervals")
        published.append("headstart-metrics")
    rows = per_class_rows(paths)
    if rows:
        create_table_artifact(rows, key="headstart-per-class", description="per-class metrics with 95 % intervals")
        published.append("headstart-per-class")
    if verdict is not None:
        create_markdown_artifact(verdict_markdown(verdict), key="headstart-verdict",
                                 description=f"promotion gate: {verdict.get('action')}")
        published.append("headstart-verdict")
        comparison = verdict.get("comparison") or {}
        if comparison:
            create_table_artifact([{"view": view} | c for view, c in comparison.items()],
                                  key="headstart-comparison", description="paired challenger - champion")
            published.append("headstart-comparison")
    return published
