"""params.yaml is validated: typos and bad values are one-line errors naming the key. It is generated from the schema,
which holds every default and description once; the demos never write it."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tasks.core.errors import UserError
from tasks.core.params import Params, apply_overrides, load_params, params_yaml, validate, write_overrides
from tests.conftest import REPO, run


def _shipped_params(tmp_path: Path) -> Path:
    """params.yaml as committed: the checkout's copy is the user's to change (`headstart run -S`)."""
    shown = run(["git", "show", "HEAD:params.yaml"], REPO, check=False)
    if shown.returncode != 0:  # not a git checkout: the file is all there is
        return REPO / "params.yaml"
    (tmp_path / "params.yaml").write_text(shown.stdout)
    return tmp_path / "params.yaml"


def test_shipped_params_file_is_valid_and_complete(tmp_path):
    shipped = _shipped_params(tmp_path)
    params = load_params(shipped)
    assert params.backbone.name == "tf_efficientnet_lite0"
    # every knob of the schema is spelled out in the shipped file
    raw = YAML(typ="safe").load(shipped.read_text())
    assert set(raw) == set(Params.model_fields)
    for section, model in Params.model_fields.items():
        if isinstance(raw[section], dict):
            assert set(raw[section]) == set(model.annotation.model_fields), section


def test_params_file_is_generated_from_the_schema(tmp_path):
    """The schema holds each default and description once; params.yaml is its generated text (the checkout's copy,
    or, once `headstart run -S` changed that, the committed one)."""
    generated = params_yaml()
    if (REPO / "params.yaml").read_text() != generated:
        assert _shipped_params(tmp_path).read_text() == generated, \
            "params.yaml is not what the schema generates: python -m tasks.core.params --write"
    assert "# inverse regularisation strength" in generated  # descriptions become comments
    proc = run([sys.executable, "-m", "tasks.core.params", "--check", "--file", str(tmp_path / "nothing.yaml")],
               REPO, check=False)
    assert proc.returncode == 1 and "python -m tasks.core.params --write" in proc.stderr


def test_generated_params_read_back_as_written(tmp_path):
    """Any valid params render to YAML that the safe loader (DVC's) reads back to the same values."""
    params = validate(apply_overrides({}, [
        "backbone.layer=[blocks.4, pooled]", "ingest.group_pattern=null", "ingest.extensions=[.txt, '#x', 'a: b']",
        "head.class_weight={cat: 2, dog: 0.5}", "ingest.source='/data/my set: 2024 # new'", "head.C=auto", "seed=7"]))
    assert params.ingest.source == "/data/my set: 2024 # new"
    f = tmp_path / "params.yaml"
    f.write_text(params_yaml(params))
    assert load_params(f) == params
    assert YAML(typ="safe").load(f.read_text()) == params.model_dump()
    write_overrides(["head.C=0.3"], f)  # -S changes its own line, nothing else
    assert f.read_text() == params_yaml(load_params(f, ["head.C=0.3"]))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("head:\n  c: 1.0\n", "unknown key 'head.c' (did you mean 'head.C'?)"),
        ("bakbone:\n  name: x\n", "unknown key 'bakbone' (did you mean 'backbone'?)"),
        ("ingest:\n  val_fracton: 0.1\n", "unknown key 'ingest.val_fracton' (did you mean 'ingest.val_fraction'?)"),
        ("head:\n  C: -1\n", "head.C: must be > 0 or auto"),
        ("head:\n  C: fast\n", "head.C: Input should be a valid number"),
        ("backbone:\n  weights: s3://x\n", "backbone.weights: unknown weights source"),
        ("backbone:\n  layer: [blocks.4, blocks.4]\n", "backbone.layer: ['blocks.4', 'blocks.4'] names a "
                                                       "layer twice"),
        ("backbone:\n  layer: []\n", "backbone.layer: an empty list names no layer; use pooled"),
    ],
)
def test_bad_params_give_one_line_naming_the_key(tmp_path: Path, text: str, expected: str):
    f = tmp_path / "params.yaml"
    f.write_text(text)
    with pytest.raises(UserError) as exc:
        load_params(f)
    msg = str(exc.value)
    assert expected in msg and str(f) in msg
    assert "\n" not in msg


def test_typo_on_the_command_line_exits_2_with_one_line_and_no_traceback(tmp_path: Path):
    (tmp_path / "params.yaml").write_text("head:\n  C: 0.1\n  clas_weight: balanced\n")
    proc = run([sys.executable, "-m", "tasks.head"], tmp_path, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "unknown key 'head.clas_weight' (did you mean 'head.class_weight'?)" in lines[0]
    assert "Traceback" not in proc.stderr


def test_overrides_are_typed_and_written_back_keeping_comments(tmp_path: Path):
    f = tmp_path / "params.yaml"
    f.write_text((REPO / "params.yaml").read_text())
    params = write_overrides(["head.C=0.3", "backbone.input_size=128"], f)
    assert params.head.C == 0.3 and params.backbone.input_size == 128
    text = f.read_text()
    assert "# inverse regularisation strength" in text
    assert load_params(f).head.C == 0.3
    with pytest.raises(UserError, match="head.C"):
        write_overrides(["head.C=zero"], f)
    assert load_params(f).head.C == 0.3  # a rejected override leaves the file as it was


def test_the_text_demo_runs_in_a_project_of_its_own_and_leaves_the_checkout_alone(tmp_path):
    """`headstart demo --text` materialises demos/text/ (params, dvc.yaml, tasks/, DVC without git): the checkout's
    params.yaml stays as it was, its DVC does not see the demo's pipeline, and git sees nothing but ignored files."""
    from tasks.dataset.bbc_demo import TEXT_DEMO_DIR, TEXT_DEMO_PARAMS, TEXT_DEMO_PROJECT, make_project

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for f in ("params.yaml", "dvc.yaml", ".gitignore"):
        shutil.copy(REPO / f, checkout / f)
    (checkout / "tasks").symlink_to(REPO / "tasks")
    run(["git", "init", "-q"], checkout)
    run([sys.executable, "-m", "dvc", "init", "-q"], checkout)
    shutil.copy(REPO / ".dvc" / "config", checkout / ".dvc" / "config")
    stages = run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], checkout).stdout.split()
    before = (checkout / "params.yaml").read_text()
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], checkout).stdout

    root = make_project(checkout / TEXT_DEMO_PROJECT, checkout)
    assert make_project(root, checkout) == root  # idempotent
    params = load_params(root / "params.yaml")
    assert (params.ingest.source, params.backbone.name) == (TEXT_DEMO_DIR, "minilm")
    assert params == validate(apply_overrides({}, list(TEXT_DEMO_PARAMS)))  # the rest: the schema's defaults
    assert os.path.samefile(root / "tasks", REPO / "tasks")
    assert "no_scm = True" in (root / ".dvc" / "config").read_text()
    assert run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], root).stdout.split() == stages

    assert (checkout / "params.yaml").read_text() == before
    assert run([sys.executable, "-m", "dvc", "stage", "list", "--name-only", "--all"], checkout).stdout.split() == \
        stages  # the demo's dvc.yaml belongs to its own (sub-)repository
    assert run(["git", "status", "--porcelain", "--untracked-files=all"], checkout).stdout == status


def test_the_image_demo_refuses_params_that_do_not_read_its_data(tmp_path):
    (tmp_path / "params.yaml").write_text("ingest:\n  source: data/text_demo\n")
    env = {**os.environ, "HEADSTART_ROOT": str(tmp_path)}
    proc = run([sys.executable, "-c", "from flows.cli import main; main(['demo'])"], tmp_path, check=False,
               env={**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"})
    assert proc.returncode == 2, proc.stderr
    assert "ingest.source: data/text_demo" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "data" / "raw").exists()
