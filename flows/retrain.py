"""The retraining flow: new data in, a better-or-equal model out, never a worse one.

detect new/changed/removed files under `ingest.source` -> (nothing new and a champion exists: stop) -> ingest
(existing files keep their split) -> features (new images only) -> head -> finetune -> export -> evaluate -> score the
challenger (models/model.onnx) and the champion (models/champion/model.onnx) on the same current test split and on
the champion's hold-out -> promote the challenger unless it is worse by more than `retrain.tolerance` on
`retrain.metric` (the rule: `tasks.serving.champions.decide`; else keep it under models/rejected/ with the reason; the
champion is untouched) -> `dvc commit` -> `dvc push` (with `retrain.push`). Every stage is the same function
`dvc repro` runs; flows only compose.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

from prefect import flow, get_run_logger, task

from flows.dvc_sync import dvc_command, dvc_commit
from flows.train import STAGE_TASKS, STAGES
from tasks.core.files import atomic_write_text
from tasks.core.params import PARAMS_FILE, Params, load_params
from tasks.core.paths import ProjectPaths, default_paths
from tasks.dataset.changes import detect_changes
from tasks.dataset.manifest import read_manifest, split_rows
from tasks.serving.champions import champion_model, champion_test_keys, champion_version, decide, keep_rejected, promote
from tasks.serving.scoring import score_models


@task(name="detect-changes")
def detect_task(params: Params, paths: ProjectPaths):
    return detect_changes(params, paths)


@task(name="compare")
def compare_task(params: Params, paths: ProjectPaths) -> dict:
    """Challenger and champion metrics on the same current test split, and on the champion's trusted hold-out (the
    test images it was judged on, still in the test split): new data can poison the current test split
    (mislabelled new test images hurt both models alike), never the trusted one."""
    champion = champion_model(paths)
    models = {"challenger": paths.onnx} | ({"champion": champion} if champion else {})
    trusted = champion_test_keys(paths) if champion else None
    scores = score_models(models, params, paths, "test", {"trusted": trusted} if trusted else None)
    out = {"challenger": scores["challenger"]["all"], "champion": scores["champion"]["all"] if champion else None}
    if champion and "trusted" in scores["champion"]:
        out["challenger_trusted"] = scores["challenger"]["trusted"]
        out["champion_trusted"] = scores["champion"]["trusted"]
    return out


@task(name="dvc-push", retries=2, retry_delay_seconds=[5, 30])
def push_task(paths: ProjectPaths) -> None:
    """Push DVC-tracked data to the default remote (retried: remotes fail transiently)."""
    dvc_command(paths.root, "push", "--quiet")


def manifest_test_keys(paths: ProjectPaths) -> list[str]:
    """sha256 of the current test split (stored with a promoted model as its trusted hold-out)."""
    return split_rows(read_manifest(paths), "test")["sha256"].tolist()


@flow(name="headstart-retrain", log_prints=True)
def retrain_flow(root: str | None = None, force: bool = False) -> dict:
    """Retrain on new data and promote only a challenger that is not worse; returns what happened."""
    logger = get_run_logger()
    paths = ProjectPaths(Path(root).resolve()) if root else default_paths()
    params = load_params(paths.root / PARAMS_FILE)
    t0 = time.perf_counter()
    changes = detect_task(params, paths)
    if not changes.any and champion_model(paths) is not None and not force:
        logger.info("retrain: nothing new under %s; champion v%s stays", params.ingest.source,
                    champion_version(paths))
        return {"action": "nothing-new", "champion_version": champion_version(paths)}
    logger.info("retrain: %s", changes.describe())
    results = {name: STAGE_TASKS[name](params, paths) for name in STAGES}
    scores = compare_task(params, paths)
    promote_it, why = decide(params, scores)
    record = {"decided_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "reason": why,
              "metric": params.retrain.metric, "tolerance": params.retrain.tolerance,
              "changes": {"new": len(changes.new), "changed": len(changes.changed), "removed": len(changes.removed)},
              "extracted": results["features"]["extracted"], "scores": scores}
    if promote_it:
        test_keys = manifest_test_keys(paths)
        version = promote(paths, scores["challenger"], record, params.backbone.input_size, params.export.triton_name,
                          params.export.triton_max_batch_size, test_keys)
        action = "promoted"
        logger.info("retrain: promoted v%04d (%s)", version, why)
    else:
        kept = keep_rejected(paths, scores["challenger"], record)
        action = "rejected"
        logger.warning("retrain: challenger rejected, champion v%s stays (%s); kept in %s",
                       champion_version(paths), why, kept.relative_to(paths.root))
    record |= {"action": action, "champion_version": champion_version(paths),
               "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_text(paths.metrics / "retrain.json", json.dumps(record, indent=2))
    dvc_commit(paths.root)
    if params.retrain.push and (paths.root / ".dvc").is_dir():
        push_task(paths)
    return record


if __name__ == "__main__":
    retrain_flow()
