"""One seam per idea: the modality is asked, never compared by name, outside its registry; one InputContract writes
and reads every stored form of "what the model takes"; functions stay small enough to read."""

from __future__ import annotations

import ast
import json

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tasks.core.errors import UserError
from tasks.core.modality_api import Modality
from tasks.core.params import BackboneParams, Params
from tasks.modality.registry import (
    MODALITIES,
    contract_from_metadata,
    contract_from_registry,
    modality_for,
    modality_named,
)
from tasks.model.backbone_catalog import CATALOG
from tests.conftest import REPO

REGISTRY = REPO / "tasks" / "modality" / "registry.py"
NAMES = set(MODALITIES) | {f"{name}s" for name in MODALITIES}  # "image", "images", "text", "texts"
MAX_FUNCTION_LINES = 60
BACKBONE_OF = {"image": "tf_efficientnet_lite0", "text": "minilm"}


def _code_files():
    return sorted(p for d in ("tasks", "flows") for p in (REPO / d).rglob("*.py"))


def _name_comparisons(tree: ast.AST) -> list[int]:
    """Lines where a modality's name is compared with == or != (what asking the Modality object replaces)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Constant) and o.value in NAMES for o in operands):
                lines.append(node.lineno)
    return lines


def test_no_file_but_the_registry_compares_a_modality_by_its_name():
    found = {p.relative_to(REPO).as_posix(): lines for p in _code_files() if p != REGISTRY
             if (lines := _name_comparisons(ast.parse(p.read_text())))}
    assert found == {}, f"ask the Modality object (tasks.core.modality_api) instead of comparing names: {found}"


def test_the_name_check_finds_a_comparison_when_there_is_one():
    assert _name_comparisons(ast.parse('if modality == "text":\n    pass\nok = "text" in rows')) == [1]


def test_no_function_in_tasks_or_flows_is_longer_than_60_lines():
    long = [f"{p.relative_to(REPO)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for p in _code_files() for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def test_every_catalog_backbone_resolves_to_a_registered_modality_and_unknown_names_are_one_line():
    for name in CATALOG:
        assert isinstance(modality_for(BackboneParams(name=name)), Modality), name
    with pytest.raises(UserError, match=r"unknown modality 'audio'; headstart knows image, text"):
        modality_named("audio")


@pytest.mark.parametrize("name", sorted(MODALITIES))
def test_an_input_contract_reads_back_every_form_it_writes(name):
    params = Params.model_validate({"backbone": {"name": BACKBONE_OF[name]}})
    modality = modality_for(params.backbone)
    contract = modality.input_contract(params, ["cat", "dog", "fox"])
    assert contract.modality == name and contract.classes == ("cat", "dog", "fox")

    meta = {"headstart.input": contract.metadata_json()}
    again = contract_from_metadata(meta, ["cat", "dog", "fox"])
    assert again == contract and again.metadata_json() == contract.metadata_json()  # byte for byte

    entry = json.loads(json.dumps(contract.registry_entry()))  # as promotion.json stores it
    from_registry = contract_from_registry(entry)
    assert from_registry.same_input(contract) and from_registry.registry_entry() == entry
    assert not contract.same_input(modality.input_contract(params, ["cat", "dog"]))  # a class fewer
    assert not contract.same_input(None)

    config = text_format.Parse(contract.config_pbtxt("m", 16), model_config_pb2.ModelConfig())
    assert config.name == "m" and config.max_batch_size == 16 and config.platform == "onnxruntime_onnx"
    assert config.version_policy.HasField("all") and config.HasField("dynamic_batching")
    (tensor,) = config.input
    assert tensor.name == contract.name and list(tensor.dims) == (list(contract.dims) or [1])
    assert [(o.name, list(o.dims)) for o in config.output] == [("logits", [3]), ("probs", [3])]
    assert next(o for o in config.output if o.name == "probs").label_filename == "labels.txt"


def test_contracts_of_the_two_modalities_never_share_a_deploy_folder():
    image = modality_named("image").input_contract(Params(), ["a", "b"])
    text = modality_named("text").input_contract(Params.model_validate({"backbone": {"name": "minilm"}}), ["a", "b"])
    assert not image.same_input(text) and not text.same_input(image)


def test_models_exported_before_the_modality_was_stored_read_as_images():
    old = {"headstart.input": json.dumps({"name": "images", "dtype": "uint8", "layout": "NHWC", "color": "RGB",
                                          "size": [96, 96], "resize": "pad", "note": "n"})}
    contract = contract_from_metadata(old, ["a"])
    assert contract.modality == "image" and contract.dims == (96, 96, 3) and contract.field("resize") == "pad"
    assert contract_from_registry({"classes": ["a"], "input_size": 96}).same_input(contract)
