"""The training flow: ingest -> features -> head -> finetune -> export -> evaluate, then record the run with DVC.
The run publishes its metrics with intervals as Prefect artifacts (`flows.artifacts`).

Each Prefect task is a thin wrapper over the stage function in `tasks/` (the same functions `dvc repro` runs via
`python -m tasks.<stage>`). After the stages, `dvc commit` records deps and outs in dvc.lock, so the repository
ends in the state `dvc repro` would leave (`dvc status` clean, `dvc push` ready).
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import Path

from prefect import flow, task

from flows.artifacts import publish_run_artifacts
from flows.dvc_sync import dvc_commit
from tasks.core.params import PARAMS_FILE, load_params, write_overrides
from tasks.core.paths import ProjectPaths, default_paths
from tasks.core.stages import STAGES, stage_function


def _as_dict(summary) -> dict:
    return asdict(summary) if is_dataclass(summary) else dict(summary)


def _stage_task(name: str):
    fn = stage_function(name)

    @task(name=name, retries=0, log_prints=True)
    def run(params, paths: ProjectPaths) -> dict:
        return _as_dict(fn(params, paths))

    return run


STAGE_TASKS = {name: _stage_task(name) for name in STAGES}


@flow(name="headstart-train", log_prints=True)
def train_flow(overrides: list[str] | None = None, root: str | None = None, commit: bool = True) -> dict:
    """Run every stage on `root` (default: the working directory) and return each stage's summary.

    `overrides` (dotted `key=value`) are written into params.yaml first, as `dvc exp run -S` does, so dvc.lock
    records the parameters that produced the artifacts. With `commit`, finishes with `dvc commit`.
    """
    paths = ProjectPaths(Path(root).resolve()) if root else default_paths()
    params_file = paths.root / PARAMS_FILE
    params = write_overrides(overrides, params_file) if overrides else load_params(params_file)
    results = {}
    for name in STAGES:
        results[name] = STAGE_TASKS[name](params, paths)
    publish_run_artifacts(paths)  # the metrics with intervals, per-class table, plot links: in the Prefect UI
    if commit:
        dvc_commit(paths.root)
    return results


if __name__ == "__main__":
    train_flow()
