"""The one question "image or text?" as an interface: what a kind of sample (a modality) must answer for every stage.

Implementations live in `tasks.modality` (one module per modality) and are registered by name in
`tasks.modality.registry`; a stage resolves the modality once, from the backbone (`modality_for`) or from a model's
own contract, and passes the object down. The interface sits in `core` so that the lower layers (dataset,
extraction) can be handed a modality and call it without importing the layer that implements it.

Nothing outside the registry compares a modality by its name: code asks the object instead. Adding a modality (audio,
tabular embeddings) is one new module implementing this class and one line in the registry.

Raw samples are what the shipped graph takes and what every parity gate feeds it: for images a uint8 NHWC array,
for texts a numpy object array of Python strings.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


class Modality(ABC):
    """A kind of sample, and everything that differs with it. Stateless: one shared instance per modality."""

    name: str                        # the registry key, stored in ONNX metadata (`headstart.input`.modality)
    noun: str                        # plural, for messages: "images", "texts"
    unit: str                        # progress-bar unit: "img", "text"
    stored_as: str                   # where stages after ingest read samples from, for messages: "image files"
    default_extensions: frozenset[str]  # what a folder source or `headstart predict` picks up
    reads_inline_text: bool = False  # a CSV source may carry the sample itself in a `text` column
    channels_last: bool = False      # train in torch's channels_last memory format on CPU
    int8_calibrated: bool = True     # int8 with ranges calibrated on training samples (static); False: dynamic
    card_template: str               # its model-card paragraphs: a Jinja2 file under tasks/modality/ (macros what, limits)

    # ---- reading data (ingest, change detection, predict)
    @abstractmethod
    def csv_encoding(self, p) -> str:
        """The encoding a CSV source is read in (`IngestParams` p)."""

    @abstractmethod
    def backbone_hint(self, backbone: str) -> str:
        """The end of a wrong-modality error: what backbone `backbone` reads and what to set instead."""

    @abstractmethod
    def inspect(self, candidate, p, known: dict[str, tuple[int, int]], hashes):
        """Read, check and key one ingest candidate (`tasks.dataset.sources.Candidate`): sets its sha256, width,
        height, or its rejection reason; returns it."""

    @abstractmethod
    def content_sha256(self, candidate, p, hashes) -> str:
        """The manifest key of a listed candidate's content now ("" when it cannot be read): what change detection
        compares with the manifest."""

    @abstractmethod
    def read_input(self, path: Path, input_size: int, resize: str, max_pixels: int) -> tuple[Any, str]:
        """One file as the shipped graph takes it, or (None, reason): what `headstart predict` feeds the model."""

    # ---- samples listed in a manifest (features, finetune, export, evaluate)
    @abstractmethod
    def holds(self, rows) -> bool:
        """True when manifest `rows` are samples of this modality."""

    @abstractmethod
    def decoder(self) -> str:
        """What turns a listed sample into the model's input, with its version: recorded with every feature shard
        and part of the feature fingerprint."""

    @abstractmethod
    def load_rows(self, rows, paths, input_size: int, resize: str, max_pixels: int, hashes=None) -> np.ndarray:
        """The raw samples of manifest `rows`, in row order, at a model's input size (images checked against their
        sha256)."""

    @abstractmethod
    def empty(self, params) -> np.ndarray:
        """No samples, with the shape and dtype `load_rows` gives."""

    @abstractmethod
    def sources(self, manifest, keys: list[str], root: Path) -> list[tuple[str, str]]:
        """(sha256, source) of each of `keys` in the extraction order: an image's absolute path, or the text."""

    @abstractmethod
    def decode_batch(self, batch: list[tuple[str, str]], params, hashes) -> np.ndarray:
        """Raw samples for a batch of `sources` pairs (images decoded from their checked files)."""

    # ---- the backbone and its graph
    @abstractmethod
    def feature_recipe(self, p, spec, seed: int) -> dict:
        """Everything that changes a feature vector of backbone params `p` (spec: its catalog entry), in the order
        the ONNX metadata stores it (the fingerprint adds the feature version in front)."""

    @abstractmethod
    def input_extent(self, p) -> str:
        """How big a sample is for the model, for messages: "224px", "256 tokens"."""

    @abstractmethod
    def build_model(self, params, head=None):
        """(torch model that trains and ships, in eval mode, with `head` when given; its LoadedBackbone)."""

    @abstractmethod
    def torch_input(self, params) -> Callable[[np.ndarray], tuple] | None:
        """raw samples -> the torch model's positional inputs, or None when the samples go in as they are."""

    @abstractmethod
    def export_graph(self, model, dest: Path, params, output_names: list[str]) -> Path:
        """The torch model as an ONNX graph that takes raw samples, dynamic batch axis, written atomically."""

    @abstractmethod
    def check_graph(self, params, graph: Path, samples: np.ndarray) -> None:
        """Checks of a new backbone graph beyond feature parity (a UserError when it fails)."""

    @abstractmethod
    def input_contract(self, params, classes: list[str]):
        """What a model built from `params` takes (`tasks.modality.input_contract.InputContract`)."""

    @abstractmethod
    def contract_from_metadata(self, entry: dict, classes: list[str]):
        """The InputContract stored in an ONNX model's `headstart.input` entry."""

    @abstractmethod
    def contract_from_registry(self, entry: dict):
        """The InputContract of a promoted version's promotion.json `contract` entry."""

    @abstractmethod
    def int8_blocker(self) -> str:
        """Why this modality's models ship fp32 only, or "" when the int8 variant applies."""

    # ---- fine-tuning
    @abstractmethod
    def units(self, loaded):
        """The backbone cut into trainable units, top first (`tasks.model.units.Units`)."""

    @abstractmethod
    def finetune_inputs(self, params, paths, train_rows, val_rows) -> tuple[Any, Any, Callable]:
        """(train inputs, val inputs, batch maker: inputs[idx] -> the model's input tensor(s))."""
