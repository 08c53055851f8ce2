"""The champion registry and the one deploy repository, on their own: versions, the pointer, contract changes."""

from __future__ import annotations

import json

from tasks.core.params import Params
from tasks.core.paths import ProjectPaths
from tasks.registry.champions import champion_model, champion_version, promote, serving_dir, versions


def _candidate(paths: ProjectPaths, classes: list[str], tag: str) -> None:
    paths.models.mkdir(parents=True, exist_ok=True)
    (paths.models / "model.onnx").write_bytes(f"onnx {tag}".encode())  # promotion copies bytes; it never parses them
    (paths.models / "labels.txt").write_text("\n".join(classes) + "\n")
    (paths.models / "MODEL_CARD.md").write_text(f"# card {tag}\n")


def _output_dims(folder) -> list[int]:
    """The class dimension of each output in the folder's config.pbtxt, parsed with Triton's own schema."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    return [d for out in config.output for d in out.dims]


def test_a_contract_change_swaps_the_whole_model_folder_and_the_registry_keeps_every_version(tmp_path):
    paths, params = ProjectPaths(tmp_path), Params()
    folder = serving_dir(paths) / params.export.triton_name
    for tag in ("a", "b"):
        _candidate(paths, ["cat", "dog", "fox"], tag)
        promote(paths, params, {"f1_macro": 0.5}, {"reason": tag}, test_keys=[tag])
    assert sorted(p.name for p in folder.iterdir()) == ["1", "2", "config.pbtxt", "labels.txt"]
    assert (folder / "2" / "model.onnx").read_bytes() == b"onnx b" and _output_dims(folder) == [3, 3]

    _candidate(paths, ["cat", "dog"], "c")  # one class fewer: the old versions cannot share the new config
    assert promote(paths, params, {"f1_macro": 0.6}, {"reason": "c"}, test_keys=["c"]) == 3
    assert sorted(p.name for p in folder.iterdir()) == ["3", "config.pbtxt", "labels.txt"]
    assert _output_dims(folder) == [2, 2]
    assert (folder / "labels.txt").read_text() == "cat\ndog\n"
    assert list(versions(paths)) == [1, 2, 3] and champion_version(paths) == 3
    assert champion_model(paths).read_bytes() == b"onnx c"
    record = json.loads((paths.models / "registry" / "v0003" / "promotion.json").read_text())
    assert record["contract"] == {"classes": ["cat", "dog"], "input_size": params.backbone.input_size}
    leftovers = [p.name for p in (paths.models / "registry").iterdir()] + [p.name for p in serving_dir(paths).iterdir()]
    assert not [n for n in leftovers if n.startswith(".")]  # nothing half-written left behind


def test_promoting_the_champion_itself_again_is_a_no_op(tmp_path):
    from tasks.registry.promotion import judge_and_publish

    paths, params = ProjectPaths(tmp_path), Params()
    _candidate(paths, ["cat", "dog"], "a")
    promote(paths, params, {"f1_macro": 0.5}, {"reason": "a"}, test_keys=["a"])
    record = judge_and_publish(params, paths)  # the same bytes: nothing to score, nothing to add
    assert record["action"] == "unchanged" and list(versions(paths)) == [1]


def test_every_published_file_reaches_the_disk_before_its_rename(tmp_path, monkeypatch):
    import os

    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd):  # observe, then really sync
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    paths, params = ProjectPaths(tmp_path), Params()
    _candidate(paths, ["cat", "dog"], "a")
    monkeypatch.setattr(os, "fsync", spy)
    promote(paths, params, {"f1_macro": 0.5}, {"reason": "a"}, test_keys=["a"])
    monkeypatch.undo()
    published = [p for d in ("registry", "serving") for p in (paths.models / d).rglob("*") if p.is_file()]
    names = [os.path.basename(s) for s in synced]
    for f in published:  # synced before the rename: inside its temporary folder, or under its temporary name
        assert any(n == f.name or n.startswith(f".{f.name}.") for n in names), f"{f} was published without an fsync"
    assert str(paths.models / "registry") in synced  # the folder holding the renamed entries, after the rename
