"""The modality registry: name -> the one `Modality` object, and the ways a stage resolves it (from the backbone, from
a model's stored contract, from manifest rows). This module is the only place that maps a modality's name to its
behaviour; everything else asks the object it was handed.

A new modality: implement `tasks.core.modality_api.Modality` in a module beside this one and add it to MODALITIES
(and give its backbones `modality="<name>"` in `tasks.model.backbone_catalog`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks.core.errors import UserError
from tasks.core.modality_api import Modality
from tasks.core.params import BackboneParams
from tasks.modality.image import ImageModality
from tasks.modality.input_contract import InputContract
from tasks.modality.text import TextModality

if TYPE_CHECKING:  # annotations only: naming a modality imports no pandas
    import pandas as pd

MODALITIES: dict[str, Modality] = {m.name: m for m in (ImageModality(), TextModality())}
STORED_DEFAULT = "image"  # models and registry entries written before the modality was stored were images


def modality_named(name: str) -> Modality:
    """The registered modality called `name`; a one-line UserError for an unknown one."""
    try:
        return MODALITIES[name]
    except KeyError:
        raise UserError(f"unknown modality '{name}'; headstart knows {', '.join(MODALITIES)}") from None


def modality_for(p: BackboneParams) -> Modality:
    """What the configured backbone reads (and so what ingest looks for and every later stage handles)."""
    from tasks.model.backbone_catalog import resolve_spec

    return modality_named(resolve_spec(p.name).modality)


def others_than(modality: Modality) -> tuple[Modality, ...]:
    """Every other registered modality: what a source that holds no data of `modality` may hold instead."""
    return tuple(m for m in MODALITIES.values() if m is not modality)


def modality_of_rows(rows: pd.DataFrame) -> Modality | None:
    """The modality of manifest `rows` (None for no rows): each modality says whether it holds them."""
    return next((m for m in MODALITIES.values() if m.holds(rows)), None)


def contract_from_metadata(meta: dict[str, str], classes: list[str]) -> InputContract:
    """The InputContract in an ONNX model's metadata_props (`headstart.input`)."""
    import json

    entry = json.loads(meta["headstart.input"])
    return modality_named(entry.get("modality", STORED_DEFAULT)).contract_from_metadata(entry, classes)


def contract_from_registry(entry: dict) -> InputContract:
    """The InputContract of a promoted version (promotion.json's `contract`)."""
    # promotion.json stores the input, not the modality: {"input": "texts"} or {"input_size": S}
    name = "text" if entry.get("input") == "texts" else STORED_DEFAULT
    return modality_named(name).contract_from_registry(entry)
