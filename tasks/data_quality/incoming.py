"""What the retrain flow asks of the data before the gate: have the new samples drifted, and how many of them does the
label audit flag? The answer is a dict the verdict carries (models/metrics/promotion.json, the Prefect artifacts).

The champion's training samples are the train rows of the current manifest that are not new: splits are sticky
(tasks.dataset.splits), so those are the rows the champion was fitted on, less any file removed since. The new
samples are the usable manifest rows of the files the retrain found new or changed, whatever split ingest put them in.
"""

from __future__ import annotations

import json

import pandas as pd

from tasks.core.files import atomic_write_text
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths
from tasks.core.progress import log
from tasks.data_quality.drift import METHOD, drift_report
from tasks.data_quality.embeddings import read_embeddings
from tasks.data_quality.label_audit import LABEL_ISSUES_CSV
from tasks.dataset.manifest import read_manifest

DRIFT_JSON = "drift.json"  # under models/metrics/


def drift_of_new_samples(params: Params, paths: ProjectPaths, new_paths: list[str]) -> dict:
    """The drift check (tasks.data_quality.drift) of the samples at `new_paths` against the champion's training
    samples, written to models/metrics/drift.json and returned. `holds` is the sentence that holds the promotion
    (tasks.registry.promotion: a check with a truthy "holds") when they drifted and drift.holds_promotion is true,
    else null. Fewer than 2 new usable samples: not tested (`drifted` false, `skipped` says why)."""
    manifest = read_manifest(paths)
    is_new = manifest["path"].isin(set(new_paths))
    new, reference = manifest[is_new], manifest[~is_new & (manifest["split"] == "train")]
    d = params.drift
    if len(new) < 2 or len(reference) < 2:
        report = {"drifted": False, "method": METHOD, "statistic": None, "p_value": None, "alpha": d.alpha,
                  "n_reference": len(reference), "n_new": len(new),
                  "skipped": f"{len(new)} new and {len(reference)} reference samples: the test needs 2 of each"}
    else:
        report = drift_report(read_embeddings(params, paths, reference["sha256"].tolist()),
                              read_embeddings(params, paths, new["sha256"].tolist()),
                              d.alpha, d.permutations, params.seed, d.max_samples)
    report["holds"] = (f"the {report['n_new']} new samples drifted from the champion's training samples (MMD "
                       f"permutation p={report['p_value']:.4f} < drift.alpha {d.alpha:g}); set "
                       f"drift.holds_promotion: false to promote anyway") \
        if report["drifted"] and d.holds_promotion else None
    atomic_write_text(paths.metrics / DRIFT_JSON, json.dumps(report, indent=2))
    if "skipped" in report:
        log(f"drift: not tested ({report['skipped']})")
    else:
        log(f"drift: new samples {'DRIFTED' if report['drifted'] else 'not drifted'} from the champion's training "
            f"samples (MMD^2 {report['statistic']:.4g}, permutation p={report['p_value']:.4f}, alpha {d.alpha:g}; "
            f"{report['n_new']} new vs {report['n_reference']}){'; the promotion is held' if report['holds'] else ''}")
    return report


def audit_of_new_samples(paths: ProjectPaths, new_paths: list[str]) -> dict:
    """How many of the samples at `new_paths` the label audit (data/reports/label_issues.csv, the audit stage of this
    run) flags: {"flagged_new", "new", "flagged", "report"}."""
    report = paths.reports / LABEL_ISSUES_CSV
    flagged = pd.read_csv(report, usecols=["path"])["path"] if report.exists() else pd.Series([], dtype=object)
    new = set(new_paths)
    out = {"flagged_new": int(flagged.isin(new).sum()), "new": len(new), "flagged": int(len(flagged)),
           "report": report.relative_to(paths.root).as_posix()}
    summary = paths.reports / "audit.json"
    if summary.exists():  # the near-duplicate counts of the same audit run
        counts = json.loads(summary.read_text())
        out |= {k: counts[k] for k in ("near_duplicate_pairs", "cross_split_pairs") if k in counts}
    log(f"label audit: {out['flagged_new']} of the {len(new)} new samples flagged as possible label issues "
        f"({out['flagged']} in all) -> {out['report']}")
    return out


def check_new_samples(params: Params, paths: ProjectPaths, new_paths: list[str]) -> dict[str, dict]:
    """{"drift": drift_of_new_samples(...), "audit": audit_of_new_samples(...)}: the data checks the verdict carries
    (tasks.registry.promotion.judge_and_publish's `checks`; a truthy "holds" holds the promotion)."""
    return {"drift": drift_of_new_samples(params, paths, new_paths), "audit": audit_of_new_samples(paths, new_paths)}
