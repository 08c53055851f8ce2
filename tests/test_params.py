"""params.yaml is validated: typos and bad values are one-line errors naming the key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tasks.core.errors import UserError
from tasks.core.params import Params, load_params, write_overrides
from tests.conftest import REPO, run


def _shipped_params(tmp_path: Path) -> Path:
    """params.yaml as committed: the checkout's copy is the user's to change (`headstart run -S`, `demo --text`)."""
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
    import yaml

    raw = yaml.safe_load(shipped.read_text())
    assert set(raw) == set(Params.model_fields)
    for section, model in Params.model_fields.items():
        if isinstance(raw[section], dict):
            assert set(raw[section]) == set(model.annotation.model_fields), section


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
