"""What the server serves: every version of the deploy repository (Triton's layout) and every other promoted
version, each under its own contract, plus which one is the champion; swapped as a whole when a promotion lands.

Versions in `models/serving/triton/<name>/` are described by that folder's config.pbtxt (what Triton would load).
A promotion that changed the contract (classes or input size) leaves the older versions out of that folder, because
Triton applies one config to all versions of a model; headstart serve still answers them at
`/v2/models/<name>/versions/<n>`, each under the config text its own contract gives (rendered by the same function
that writes the deploy repository), so their clients keep working while they move.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tasks.core.errors import UserError
from tasks.core.paths import ProjectPaths
from tasks.inference_server.contract import ModelContract, NotFound, parse_contract, read_contract, shown
from tasks.registry.champions import POINTER, registry_dir, serving_dir, version_contract, version_folders
from tasks.runtime.onnx_classifier import open_session


@dataclass
class ServedVersion:
    """One loaded version: its ONNX Runtime session and its contract."""

    version: int
    path: Path
    contract: ModelContract
    in_deploy_repository: bool
    session: object = field(repr=False)

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        """The outputs for `inputs`; ONNX Runtime's arena is shrunk back after the run, so one large batch does not
        keep its activations' memory for the life of the server."""
        return self.session.run(outputs, inputs, _shrinking_run())


def _shrinking_run():
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


@dataclass
class Snapshot:
    """An immutable view of the repository: requests read one snapshot, a reload replaces it in one assignment."""

    name: str
    champion: int
    versions: dict[int, ServedVersion]
    fingerprint: str

    def get(self, name: str, version: str | int | None) -> ServedVersion:
        """The version a request names (the champion when it names none); NotFound otherwise."""
        if name != self.name:
            raise NotFound(f"unknown model {shown(name)}; this server serves '{self.name}'")
        if version in (None, "", -1):
            return self.versions[self.champion]
        try:
            number = int(version)
        except (TypeError, ValueError):
            raise NotFound(f"model '{name}' has no version {shown(version, 20)}") from None
        if number not in self.versions:
            raise NotFound(f"model '{name}' has no version {number}; versions: {sorted(self.versions)}")
        return self.versions[number]


def repository_fingerprint(paths: ProjectPaths) -> str:
    """Changes whenever a promotion lands: the champion pointer's content and the deploy folder's identity."""
    pointer = registry_dir(paths) / POINTER
    parts = [pointer.read_text() if pointer.exists() else ""]
    for folder in sorted(serving_dir(paths).glob("*/")) if serving_dir(paths).exists() else []:
        st = folder.stat()
        parts.append(f"{folder.name}:{st.st_ino}:{st.st_mtime_ns}")
    return "|".join(parts)


def pointer_version(text: str) -> int | None:
    """The champion's version in the pointer's `text` (champion.json), None when there is none yet."""
    return int(json.loads(text)["version"]) if text.strip() else None


def load_snapshot(paths: ProjectPaths, threads: int = 0, previous: Snapshot | None = None) -> Snapshot:
    """Load the deploy repository and the registry's other versions; sessions of unchanged files are reused from
    `previous`. A UserError (one line) when there is no champion yet."""
    # the state this load answers to, read before anything else: a promotion landing while the load runs changes the
    # repository's fingerprint from this one, so the next reload sees it (reading the fingerprint last would record
    # the new promotion's pointer beside the old champion, and the next reload would find nothing to do)
    fingerprint = repository_fingerprint(paths)
    champion = pointer_version(fingerprint.split("|", 1)[0])
    folders = [f for f in serving_dir(paths).iterdir() if (f / "config.pbtxt").is_file()] \
        if serving_dir(paths).exists() else []
    if champion is None or not folders:
        raise UserError("no champion to serve yet: run `headstart demo` (or `headstart run`), then `headstart promote`")
    # the model folder that holds the champion (one per triton_name; a renamed model leaves its old folder behind)
    model_dir = next((f for f in sorted(folders) if (f / str(champion)).is_dir()), sorted(folders)[0])
    deploy_contract = read_contract(model_dir)
    old = {(v.path.stat().st_ino, v.contract): v for v in (previous.versions.values() if previous else [])
           if v.path.exists()}
    served: dict[int, ServedVersion] = {}
    for number, folder in version_folders(paths).items():
        if number > champion:  # a version a promotion is publishing right now, not yet committed by the pointer
            continue
        in_repo = (model_dir / str(number) / "model.onnx").is_file()
        path = model_dir / str(number) / "model.onnx" if in_repo else folder / "model.onnx"
        if not path.is_file():
            continue
        if in_repo:
            contract = deploy_contract
        else:
            own = version_contract(folder)
            if own is None:
                continue
            text = own.config_pbtxt(model_dir.name, deploy_contract.max_batch_size)
            contract = parse_contract(text, list(own.classes), f"{folder}/promotion.json")
        reused = old.get((path.stat().st_ino, contract))
        session = reused.session if reused else open_session(path, threads)
        served[number] = ServedVersion(number, path, contract, in_repo, session)
    if champion not in served:
        raise UserError(f"the champion v{champion:04d} has no model.onnx in {model_dir} or {registry_dir(paths)}; "
                        f"run `dvc pull` to fetch the registry")
    return Snapshot(deploy_contract.name, champion, served, fingerprint)
