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


def test_the_next_promotion_clears_what_an_interrupted_one_left(tmp_path, capfd):
    """What the issue's SIGKILL trials left with an earlier release: temporary folders in the registry and the deploy
    repository, a version above the pointer, a DVC temporary, a deploy repository that lost the champion's folder."""
    import shutil

    from tasks.registry.champions import rejected_dir
    from tasks.registry.transaction import recover

    paths, params = ProjectPaths(tmp_path), Params()
    reg, model_dir = paths.models / "registry", serving_dir(paths) / params.export.triton_name
    for tag in ("a", "b"):
        _candidate(paths, ["cat", "dog"], tag)
        promote(paths, params, {"f1_macro": 0.5}, {"reason": tag}, test_keys=[tag])
    (reg / ".v0003.k2j3x").mkdir()
    (reg / ".v0003.k2j3x" / "model.onnx").write_bytes(b"half")
    (reg / ".champion.json.q1.tmp").write_text("{")
    (serving_dir(paths) / ".headstart.x9").mkdir()
    (serving_dir(paths) / ".headstart.x9" / "config.pbtxt").write_text("half")  # Triton would try to load this
    (reg / "v0001" / ".Xy7.tmp").write_bytes(b"dvc's copy")
    shutil.copytree(reg / "v0002", reg / "v0003")  # written, never champion
    shutil.rmtree(model_dir / "2")  # the pointer moved, the deploy repository did not follow

    recover(paths, params)
    assert not [p for d in (reg, serving_dir(paths)) for p in d.rglob(".*")]
    assert list(versions(paths)) == [1, 2] and not (reg / "v0003").exists()
    kept = list(rejected_dir(paths).iterdir())
    assert [k.name.endswith("-v0003-uncommitted") for k in kept] == [True] and (kept[0] / "reason.json").exists()
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2", "config.pbtxt", "labels.txt"]
    err = capfd.readouterr().err
    assert "removed 4 temporary" in err and "v0003 was written by a promotion interrupted" in err
    assert "rebuilt it" in err

    (reg / "v0001" / "model.onnx").unlink()  # an older version lost its model: left out, no crash
    _candidate(paths, ["cat", "dog"], "c")
    assert promote(paths, params, {"f1_macro": 0.5}, {"reason": "c"}, test_keys=["c"]) == 3
    assert sorted(p.name for p in model_dir.iterdir()) == ["2", "3", "config.pbtxt", "labels.txt"]
    assert "versions [1] have no model.onnx" in capfd.readouterr().err


def test_a_champion_without_its_model_is_a_one_line_error(tmp_path):
    import pytest

    from tasks.core.errors import UserError

    paths, params = ProjectPaths(tmp_path), Params()
    _candidate(paths, ["cat", "dog"], "a")
    promote(paths, params, {"f1_macro": 0.5}, {"reason": "a"}, test_keys=["a"])
    (paths.models / "registry" / "v0001" / "model.onnx").unlink()
    _candidate(paths, ["cat", "dog"], "b")
    with pytest.raises(UserError, match=r"the champion v0001 has no model.onnx .*dvc checkout models/registry.dvc"):
        promote(paths, params, {"f1_macro": 0.5}, {"reason": "b"}, test_keys=["b"])


def test_a_pointer_file_dvc_left_half_written_is_written_anew_and_the_promotion_recorded(tmp_path, capfd):
    import functools
    import sys

    from flows.dvc_sync import dvc_command, record_promotion
    from tests.conftest import run

    paths, params = ProjectPaths(tmp_path), Params()
    run(["git", "init", "-q"], tmp_path)
    run(["git", "config", "user.email", "test@example.invalid"], tmp_path)
    run(["git", "config", "user.name", "test"], tmp_path)
    run([sys.executable, "-m", "dvc", "init", "-q"], tmp_path)
    _candidate(paths, ["cat", "dog"], "a")
    (paths.models / "registry.dvc").write_text("outs:\n- md5: 5474db30ceb2\n  si")  # `dvc add` killed mid-write
    promote(paths, params, {"f1_macro": 0.5}, {"reason": "a"}, test_keys=["a"],
            recorder=functools.partial(record_promotion, tmp_path))
    assert "models/registry.dvc was half-written" in capfd.readouterr().err
    assert dvc_command(tmp_path, "status", "--json", "models/registry.dvc", "models/serving.dvc").strip() == "{}"
    assert run(["git", "log", "-1", "--format=%s"], tmp_path).stdout.strip() == "headstart: promote v0001"
    assert not run(["git", "status", "--porcelain", "--", "models/registry.dvc"], tmp_path).stdout.strip()


def test_published_folders_have_normal_permissions(tmp_path):
    import os
    import stat

    paths, params = ProjectPaths(tmp_path), Params()
    _candidate(paths, ["cat", "dog"], "a")
    promote(paths, params, {"f1_macro": 0.5}, {"reason": "a"}, test_keys=["a"])
    umask = os.umask(0)
    os.umask(umask)
    for folder in (paths.models / "registry" / "v0001", serving_dir(paths) / params.export.triton_name):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask, folder  # a server of another user reads them
