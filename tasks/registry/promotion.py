"""The promotion gate: the candidate against the champion, on the same images, then promoted or kept aside.

Both models run through ONNX Runtime on the current test split and on the trusted hold-out (every promoted
version's test split): a batch of mislabelled new images poisons the current test split for both models alike,
never the hold-out. On each, the comparison is paired (`tasks.evaluation.intervals.paired_difference`): the difference
challenger - champion on `retrain.metric` over the same samples, with its 95 % interval and n. The rule itself is
`tasks.registry.champions.decide`. The gate judges a private copy of the
candidate, taken once under the registry's lock, and that copy is what gets published: a candidate replaced while
the gate runs is never registered unjudged (`tasks.registry.transaction`). Used by `headstart promote`, by the demo
and by the retrain flow.
"""

from __future__ import annotations

import datetime as dt
import json

from tasks.core.files import sha256_file
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths
from tasks.core.progress import log
from tasks.dataset.manifest import read_manifest, split_rows
from tasks.evaluation.intervals import paired_difference
from tasks.evaluation.scoring import score_models
from tasks.registry.champions import (
    champion_model,
    champion_version,
    decide,
    holdout_keys,
    keep_rejected,
    publish,
)
from tasks.registry.staging import Candidate, crash_point, snapshot_candidate, write_staged
from tasks.registry.transaction import Recorder, promotion_transaction


def compare(params: Params, paths: ProjectPaths, candidate: Candidate | None = None) -> dict:
    """Candidate (its copy `candidate`, else models/model.onnx) and champion metrics on the current test split and,
    when there is one, the trusted hold-out; under "comparison", the paired difference on `retrain.metric` per view
    ("test", "holdout"), each {"metric", "a" (challenger), "b" (champion), "difference", "ci_low", "ci_high", "n",
    "disagree"}."""
    champion = champion_model(paths)
    models = {"challenger": candidate.onnx if candidate else paths.onnx} | ({"champion": champion} if champion else {})
    holdout = holdout_keys(paths) if champion else set()
    if holdout:
        present = set(split_rows(read_manifest(paths), "test")["sha256"])
        gone = len(holdout - present)
        if gone:
            log(f"promotion: warning: {gone} of {len(holdout)} trusted hold-out samples are no longer in the test split "
                f"(deleted, rejected, or moved to train beside a near-duplicate since); the hold-out check uses the "
                f"{len(holdout) - gone} still there")
    predicted: dict = {}
    scores = score_models(models, params, paths, "test", {"holdout": holdout} if holdout else None, predicted)
    for view in scores["challenger"].values():
        view["model"] = str(paths.onnx)  # the copy it scored is gone after the promotion; its sha256 is recorded
    out = {"challenger": scores["challenger"]["all"], "champion": scores["champion"]["all"] if champion else None}
    if champion and "holdout" in scores["champion"]:
        out["challenger_holdout"] = scores["challenger"]["holdout"]
        out["champion_holdout"] = scores["champion"]["holdout"]
    out["comparison"] = {}
    if champion:
        y, preds = predicted["labels"], predicted["predicted"]
        for view, mask in (("test", predicted["views"]["all"]), ("holdout", predicted["views"].get("holdout"))):
            if mask is not None and mask.any():
                out["comparison"][view] = paired_difference(y[mask], preds["challenger"][mask],
                                                            preds["champion"][mask], params.retrain.metric,
                                                            sorted(set(y[mask])), seed=params.seed)
    return out


def judge_and_publish(params: Params, paths: ProjectPaths, context: dict | None = None,
                      recorder: Recorder | None = None, checks: dict[str, dict] | None = None) -> dict:
    """Under the registry's lock: copy the candidate once, compare that copy with the champion, decide, then publish
    it or keep it under models/rejected/; write the decision to models/metrics/promotion.json and return it
    ({"action": "promoted" | "rejected" | "held" | "unchanged", "reason", "rule", "comparison", "scores",
    "model_sha256", ...}). `recorder` writes the DVC/git record of a promotion (this one's, or one an interrupted run
    left undone) before the lock is released.

    `checks` are the retrain flow's data checks by name (e.g. "drift", "audit"): each dict is recorded under its name,
    and one with a truthy "holds" (its reason, a sentence) holds a promotion the comparison allows
    (`tasks.registry.champions.decide`, step 3)."""
    with promotion_transaction(paths, params, recorder) as txn:
        candidate = snapshot_candidate(paths)
        crash_point("snapshot")
        champion = champion_model(paths)
        if champion is not None and sha256_file(champion) == candidate.sha256:
            log(f"promotion: the candidate is the champion v{champion_version(paths):04d} already; nothing to do")
            return {"action": "unchanged", "champion_version": champion_version(paths), "reason": "same model"}
        test_keys = split_rows(read_manifest(paths), "test")["sha256"].tolist()
        scores = compare(params, paths, candidate)
        crash_point("judged")
        comparison = scores.pop("comparison")
        holds = {name: check["holds"] for name, check in (checks or {}).items() if check.get("holds")}
        verdict = decide(params, comparison, holds)
        why = verdict["reason"]
        record = {"decided_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "reason": why,
                  "rule": verdict["rule"], "metric": params.retrain.metric, "margin": params.retrain.margin,
                  "comparison": comparison, "scores": scores, "model_sha256": candidate.sha256,
                  **(checks or {}), **(context or {})}
        if verdict["action"] == "promoted":
            version = publish(txn, candidate, scores["challenger"], record, test_keys)
            record["action"] = "promoted"
            log(f"promotion: promoted v{version:04d} ({why})")
        else:
            kept = keep_rejected(paths, scores["challenger"], record | {"action": verdict["action"]},
                                 candidate.folder)
            record |= {"action": verdict["action"], "kept": kept.relative_to(paths.root).as_posix()}
            log(f"promotion: candidate {verdict['action']}, champion v{champion_version(paths):04d} stays ({why}); "
                f"kept in {record['kept']}")
        record["champion_version"] = champion_version(paths)
        write_staged(paths, paths.metrics / "promotion.json", json.dumps(record, indent=2))
    return record
