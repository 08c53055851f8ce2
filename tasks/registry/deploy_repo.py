"""The deploy repository as a function of the registry: the champion's contract, and every committed version that
shares it (Triton applies one config to all versions of a model).

It is derived state: a promotion moves the champion pointer first (the commit point), then makes the deploy
repository agree with it; a promotion killed in between is rolled forward by the next one (`sync_deploy_repository`
finds the disagreement and rebuilds the model folder). Older versions with another contract stay in the registry.
"""

from __future__ import annotations

from pathlib import Path

from tasks.core.paths import ProjectPaths
from tasks.core.progress import log
from tasks.modality.input_contract import InputContract
from tasks.registry.layout import champion_version, serving_dir, version_contract, version_dir, versions
from tasks.registry.staging import crash_point, fsync_tree, new_staging_folder, swap_in
from tasks.registry.triton_repo import fill_model_folder, labels_text


def deployed_versions(paths: ProjectPaths) -> tuple[InputContract | None, dict[int, Path]]:
    """(the champion's contract, {version: model.onnx} of every committed version with that contract): what the
    deploy repository must hold. (None, {}) before the first promotion."""
    champion = champion_version(paths)
    contract = None if champion is None else _stored_contract(version_dir(paths, champion))
    if contract is None:
        return None, {}
    same = {v: folder / "model.onnx" for v, folder in versions(paths).items()
            if (folder / "model.onnx").is_file() and contract.same_input(_stored_contract(folder))}
    return contract, same


def _stored_contract(folder: Path) -> InputContract | None:
    return version_contract(folder) if (folder / "promotion.json").is_file() else None


def deploy_repo_agrees(paths: ProjectPaths, name: str) -> bool:
    """True when the model folder `name` holds exactly what `deployed_versions` says: its labels and one
    `<version>/model.onnx` per version, and nothing else."""
    contract, expected = deployed_versions(paths)
    if contract is None:
        return True
    folder = serving_dir(paths) / name
    if not (folder / "config.pbtxt").is_file() or not (folder / "labels.txt").is_file():
        return False
    entries = {p.name for p in folder.iterdir()}
    if entries != {"config.pbtxt", "labels.txt", *map(str, expected)}:
        return False
    return ((folder / "labels.txt").read_text() == labels_text(contract)
            and all((folder / str(v) / "model.onnx").is_file() for v in expected))


def sync_deploy_repository(paths: ProjectPaths, name: str, max_batch_size: int, force: bool = False) -> bool:
    """Make the model folder `name` of the deploy repository agree with the registry (rebuilt in the staging area,
    fsynced, then swapped in as one step); True when it was rebuilt. Without `force`, a folder that already agrees
    is left as it is."""
    contract, expected = deployed_versions(paths)
    if contract is None or (not force and deploy_repo_agrees(paths, name)):
        return False
    lost = [v for v, folder in versions(paths).items() if not (folder / "model.onnx").is_file()]
    if lost:
        log(f"promote: warning: versions {lost} have no model.onnx in the registry and are left out of the deploy "
            f"repository; `dvc checkout models/registry.dvc` restores them")
    staged = new_staging_folder(paths, "deploy")
    fill_model_folder(staged, name, contract, max_batch_size, expected)
    fsync_tree(staged)
    crash_point("deploy-staged")
    swap_in(staged, serving_dir(paths) / name)
    return True
