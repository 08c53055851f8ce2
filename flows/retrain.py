"""The retraining flow: new data in, a better-or-equal model out, never a worse one.

detect new/changed/removed files under `ingest.source` -> (nothing new and a champion exists: stop) -> ingest
(existing files keep their split) -> features (new images only) -> head -> finetune -> export -> evaluate -> score the
challenger (models/model.onnx) and the champion on the same current test split and on the trusted hold-out, paired ->
promote the challenger unless, on either, the 95 % interval of its difference from the champion on `retrain.metric`
lies wholly below -`retrain.margin` (the gate: `tasks.registry.promotion`, rule `tasks.registry.champions.decide`;
else keep it under models/rejected/ with the reason; nothing deployable changes), and record the promotion (`dvc add` +
a git commit of the pointers) before the registry's lock is released -> `dvc commit` -> `dvc push` (with
`retrain.push`). Every stage is the same function `dvc repro` runs; flows only compose. The run publishes Prefect
artifacts (`flows.artifacts`): the metrics with intervals and the verdict with its reason.

Data checks plug in through `judge_task`'s `checks` (name -> dict recorded with the verdict; a dict with a truthy
"holds" holds the promotion: the action is then "held").
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run as this_run

from flows.artifacts import publish_run_artifacts
from flows.dvc_sync import dvc_command, dvc_commit, record_promotion
from flows.train import STAGE_TASKS, STAGES
from tasks.core.params import PARAMS_FILE, Params, load_params
from tasks.core.paths import ProjectPaths, default_paths
from tasks.data_quality.incoming import check_new_samples
from tasks.dataset.changes import detect_changes
from tasks.modality.registry import modality_for, others_than
from tasks.registry.champions import champion_model, champion_version
from tasks.registry.promotion import judge_and_publish


@task(name="detect-changes")
def detect_task(params: Params, paths: ProjectPaths):
    modality = modality_for(params.backbone)
    return detect_changes(params, paths, modality, others_than(modality))


@task(name="judge-and-publish")
def judge_task(params: Params, paths: ProjectPaths, context: dict, checks: dict[str, dict] | None = None) -> dict:
    """The promotion gate (tasks.registry.promotion): promote the challenger or keep it aside; a promotion is
    recorded (`dvc add` + a git commit of the pointers) before the registry's lock is released. `checks`: the data
    checks' records by name (a truthy "holds" in one holds the promotion)."""
    return judge_and_publish(params, paths, context, recorder=functools.partial(record_promotion, paths.root),
                             checks=checks)


@task(name="data-checks")
def data_checks_task(params: Params, paths: ProjectPaths, new_paths: list[str]) -> dict[str, dict]:
    """Drift of the new samples against the champion's training samples (models/metrics/drift.json) and how many of
    them the audit stage's label audit flags (tasks.data_quality.incoming); drifted data holds the promotion unless
    drift.holds_promotion is false."""
    return check_new_samples(params, paths, new_paths)


@task(name="dvc-push", retries=2, retry_delay_seconds=[5, 30])
def push_task(paths: ProjectPaths) -> None:
    """Push DVC-tracked data to the default remote (retried: remotes fail transiently)."""
    dvc_command(paths.root, "push", "--quiet")


@flow(name="headstart-retrain", log_prints=True)
def retrain_flow(root: str | None = None, force: bool = False) -> dict:
    """Retrain on new data and promote only a challenger that is not worse beyond the noise; returns what happened
    (the gate's record, with this run's `flow_run_id`)."""
    logger = get_run_logger()
    paths = ProjectPaths(Path(root).resolve()) if root else default_paths()
    params = load_params(paths.root / PARAMS_FILE)
    t0 = time.perf_counter()
    changes = detect_task(params, paths)
    if not changes.any and champion_model(paths) is not None and not force:
        logger.info("retrain: nothing new under %s; champion v%s stays", params.ingest.source,
                    champion_version(paths))
        record = {"action": "nothing-new", "champion_version": champion_version(paths), "flow_run_id": this_run.id}
        publish_run_artifacts(paths, record)
        return record
    logger.info("retrain: %s", changes.describe())
    results = {name: STAGE_TASKS[name](params, paths) for name in STAGES}
    context = {"changes": {"new": len(changes.new), "changed": len(changes.changed), "removed": len(changes.removed)},
               "extracted": results["features"]["extracted"]}
    checks = data_checks_task(params, paths, changes.new + changes.changed)  # issue 29: drift, label audit
    record = judge_task(params, paths, context, checks)
    record["seconds"] = round(time.perf_counter() - t0, 1)
    record["flow_run_id"] = this_run.id  # its artifacts (flows.artifacts) are found by it
    publish_run_artifacts(paths, record)
    dvc_commit(paths.root)
    if params.retrain.push and (paths.root / ".dvc").is_dir():
        push_task(paths)
    return record


if __name__ == "__main__":
    retrain_flow()
