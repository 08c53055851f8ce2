"""Champion registry and the one deploy repository: only promoted models are deployable, and they are published as
one set, by a transaction (`tasks.registry.transaction`): a kill at any moment leaves the old set or the new one.

Layout (`tasks.registry.layout`, whose readers this module re-exports), both folders DVC-tracked with `dvc add`; their
pointers `models/registry.dvc` and `models/serving.dvc` go to git, so a fresh clone + `dvc pull` gets every champion
back:
    registry/v0001/ ...        a complete set per promotion: model.onnx, labels.txt, MODEL_CARD.md, metrics.json,
                               promotion.json (why, against what, the model's sha256 and contract), test_keys.json
    registry/champion.json     the pointer to the current champion, {"version": N}: the commit point, replaced last
    serving/triton/<name>/     THE deploy repository (Triton layout): the champion's config.pbtxt and labels.txt, and
                               a version folder N/ for every promoted version with the champion's contract (classes and
                               input size); rebuilt in the staging area and swapped in as one step
    rejected/<UTC time>[-n]/   challengers that lost, with reason.json, for inspection (never deployable)

A plain run builds a *candidate* in `models/` (model.onnx, labels.txt, MODEL_CARD.md); nothing here changes until
`promote` is called, which the gate in `tasks.registry.promotion` decides.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

from tasks.core.files import link_or_copy
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths
from tasks.core.progress import log
from tasks.modality.registry import modality_for
from tasks.registry.deploy_repo import sync_deploy_repository
from tasks.registry.layout import (  # noqa: F401  (re-exported: the registry's readers)
    ARTIFACTS,
    POINTER,
    champion_dir,
    champion_model,
    champion_version,
    deployable_dirs,
    holdout_keys,
    registry_dir,
    rejected_dir,
    serving_dir,
    version_contract,
    version_dir,
    version_folders,
    versions,
)
from tasks.registry.staging import (
    Candidate,
    crash_point,
    fsync_tree,
    move_in,
    move_in_unique,
    new_staging_folder,
    snapshot_candidate,
    write_staged,
)
from tasks.registry.transaction import Recorder, Transaction, mark_record_pending, promotion_transaction


def promote(paths: ProjectPaths, params: Params, metrics: dict, record: dict, test_keys: list[str],
            recorder: Recorder | None = None) -> int:
    """Register the candidate (models/model.onnx + labels + card) as a new version and make it the champion, without
    a gate (`tasks.registry.promotion.judge_and_publish` is the gated way). Returns the new version number."""
    with promotion_transaction(paths, params, recorder) as txn:
        return publish(txn, snapshot_candidate(paths), metrics, record, test_keys)


def publish(txn: Transaction, candidate: Candidate, metrics: dict, record: dict, test_keys: list[str]) -> int:
    """Publish the candidate's copy as the next version and make it the champion (steps 3-6 of
    `tasks.registry.transaction`: version folder staged and renamed in, record noted as pending, champion pointer
    replaced, deploy repository rebuilt and swapped in; each fsynced before the rename that publishes it). Returns
    the new version number."""
    paths, params = txn.paths, txn.params
    version = max(version_folders(paths), default=0) + 1  # recovery left none above the pointer
    contract = modality_for(params.backbone).input_contract(params, candidate.classes)
    staged = new_staging_folder(paths, f"v{version:04d}")
    for name in ARTIFACTS:
        if (candidate.folder / name).exists():
            link_or_copy(candidate.folder / name, staged / name)
    (staged / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (staged / "promotion.json").write_text(json.dumps(
        record | {"version": version, "model_sha256": candidate.sha256, "contract": contract.registry_entry()},
        indent=2))
    (staged / "test_keys.json").write_text(json.dumps(sorted(test_keys)))
    fsync_tree(staged)
    crash_point("version-staged")
    move_in(staged, version_dir(paths, version))
    crash_point("version-published")
    if txn.recorder is not None:
        mark_record_pending(paths, version)
    write_staged(paths, registry_dir(paths) / POINTER, json.dumps({"version": version}) + "\n")  # the commit point
    crash_point("pointer")
    sync_deploy_repository(paths, params.export.triton_name, params.export.triton_max_batch_size, force=True)
    crash_point("deployed")
    same = [v for v, folder in versions(paths).items() if contract.same_input(version_contract(folder))]
    if len(same) < len(versions(paths)):
        log(f"promote: v{version:04d} changes the model's contract (classes or input size): the deploy repository now "
            f"serves versions {same} only; earlier versions stay in {registry_dir(paths)}")
    return version


def keep_rejected(paths: ProjectPaths, metrics: dict, reason: dict, source: Path | None = None) -> Path:
    """Keep a losing challenger (model, labels, card from `source`, default models/; metrics, reason) under
    models/rejected/<UTC time>[-n]/, built in the staging area and renamed in whole; two rejections in the same
    second get two folders."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    staged = new_staging_folder(paths, "rejected")
    for name in ARTIFACTS:
        if ((source or paths.models) / name).exists():
            shutil.copyfile((source or paths.models) / name, staged / name)
    (staged / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (staged / "reason.json").write_text(json.dumps(reason, indent=2))
    return move_in_unique(staged, rejected_dir(paths), stamp)


GATE_VIEWS = (("current test split", "test"), ("trusted hold-out", "holdout"))


def decide(params: Params, comparisons: dict, holds: dict[str, str] | None = None) -> dict:
    """The gate's rule: {"action": "promoted" | "rejected" | "held", "reason", "rule"}.

    `comparisons` holds, per view ("test": the current test split, "holdout": the trusted hold-out), the paired
    comparison of `tasks.evaluation.intervals.paired_difference` (challenger minus champion on `retrain.metric`, on
    the same samples, with its 95 % interval and n), or is empty when there is no champion.

    The rule, in order:
    1. no champion: promoted;
    2. **rejected** when, on either view, the whole 95 % interval of the difference lies below `-retrain.margin`:
       the challenger is worse by more than the margin beyond what the samples' noise explains (a poisoned or broken
       retrain). A difference whose interval reaches above `-margin` is not evidence of harm, so a retrain on more
       clean data, a few hundredths behind on a few hundred samples, is not rejected for it, and two seeds of one
       retrain (whose differences sit well inside the interval) get the same verdict;
    3. **held** when a data check holds the promotion: `holds` maps a check's name to its reason (e.g. part of the
       retrain flow's drift check: {"drift": "incoming data drifted (...); retrain.allow_drift overrides"}). This is
       where "drift holds the promotion" plugs in: it can only stop a challenger the comparison would promote, never
       promote a rejected one;
    4. otherwise **promoted**.
    """
    metric, margin = params.retrain.metric, params.retrain.margin
    if not comparisons:
        reason = "no champion yet"
        rule = "nothing to compare with: promote"
    else:
        texts, worse = [], []
        for view, key in GATE_VIEWS:
            if key not in comparisons:
                continue
            c = comparisons[key]
            texts.append(f"{view}: {metric} {c['a']:.4f} vs champion {c['b']:.4f}, difference {c['difference']:+.4f} "
                         f"[95% {c['ci_low']:+.4f}, {c['ci_high']:+.4f}], n={c['n']}")
            if c["ci_high"] < -margin:
                worse.append(view)
        reason = "; ".join(texts)
        if worse:
            rule = (f"worse beyond the noise on the {' and the '.join(worse)}: the 95% interval of (challenger - "
                    f"champion) lies below -{margin:g} (retrain.margin)")
            return {"action": "rejected", "reason": f"{reason} => {rule}", "rule": rule}
        rule = f"not worse beyond the noise: no 95% interval of (challenger - champion) lies below -{margin:g}"
    if holds:
        rule = f"{rule}, but held by {', '.join(holds)}: " + "; ".join(holds.values())
        return {"action": "held", "reason": f"{reason} => {rule}", "rule": rule}
    return {"action": "promoted", "reason": f"{reason} => {rule}", "rule": rule}
