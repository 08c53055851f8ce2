"""dvc.yaml and the Prefect flow run the same stages, in the same order, through the same entry points."""

from __future__ import annotations

import importlib

from ruamel.yaml import YAML

from tasks.core.stages import STAGES, stage_function
from tests.conftest import REPO


def test_dvc_yaml_and_flow_have_the_same_stages():
    dvc = YAML(typ="safe").load((REPO / "dvc.yaml").read_text())
    assert list(dvc["stages"]) == list(STAGES)
    for name, stage in dvc["stages"].items():
        assert stage["cmd"] == f"python -m tasks.{name}"
        module = importlib.import_module(f"tasks.{name}")
        assert stage_function(name) is getattr(module, f"run_{name}")
        assert f"tasks/{name}.py" in stage["deps"]


def test_each_stage_reads_what_an_earlier_stage_writes():
    dvc = YAML(typ="safe").load((REPO / "dvc.yaml").read_text())["stages"]
    assert dvc["ingest"]["deps"][0] == "${ingest.source}"  # DVC tracks the real source, wherever it is
    produced = {"${ingest.source}"}
    for name in STAGES:
        stage = dvc[name]
        for dep in stage["deps"]:
            if not dep.startswith("tasks/"):
                assert dep in produced, f"{name} depends on {dep}, which no earlier stage writes"
        for key in ("outs", "metrics", "plots"):
            for out in stage.get(key, []):
                produced.add(next(iter(out)) if isinstance(out, dict) else out)
