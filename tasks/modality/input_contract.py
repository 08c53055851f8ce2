"""What a model takes, in one frozen type: written into the ONNX graph's metadata by export, read back by ONNX Runtime
clients (predict, evaluate), stored per version in the registry, rendered as Triton's `config.pbtxt` through Triton's
own ModelConfig protobuf, and compared when a promotion decides which versions share one deploy folder.

The modality builds it (`Modality.input_contract`) and parses its stored forms, so the fields a modality adds (an
image size and resize mode, a text's max_length) are written and read in one place. The stored forms are kept as they
were before this type existed (the `headstart.input` JSON and promotion.json's `contract`), so models and registries
made earlier read unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# the V2 protocol's datatype -> Triton's ModelConfig DataType name
TRITON_TYPES = {"UINT8": "TYPE_UINT8", "INT8": "TYPE_INT8", "UINT16": "TYPE_UINT16", "INT16": "TYPE_INT16",
                "UINT32": "TYPE_UINT32", "INT32": "TYPE_INT32", "UINT64": "TYPE_UINT64", "INT64": "TYPE_INT64",
                "FP16": "TYPE_FP16", "FP32": "TYPE_FP32", "FP64": "TYPE_FP64", "BOOL": "TYPE_BOOL",
                "BYTES": "TYPE_STRING"}
OUTPUTS = ("logits", "probs")  # every headstart classifier returns both, (batch, classes) FP32
QUEUE_DELAY_US = 2000


@dataclass(frozen=True)
class InputContract:
    """A classifier's input and classes. `metadata` holds the `headstart.input` entry's fields in their stored
    order; `identity` what makes two versions' inputs the same for a client (with the classes)."""

    modality: str                           # the registry name of the modality that reads it
    classes: tuple[str, ...]
    name: str                               # the graph's input name
    datatype: str                           # V2 datatype of one element: UINT8, BYTES
    dims: tuple[int, ...]                   # one sample's shape, without the batch axis; () for one string
    metadata: tuple[tuple[str, Any], ...]   # the `headstart.input` entry, in order
    identity: tuple[tuple[str, Any], ...]   # promotion.json's contract besides the classes
    triton_format: str = ""                 # Triton's input format (FORMAT_NHWC), or none
    config_note: str = ""                   # comment lines that head config.pbtxt (what a Triton operator must do)

    def field(self, key: str, default: Any = None) -> Any:
        """One field of the metadata entry (e.g. "size", "resize", "max_length")."""
        return dict(self.metadata).get(key, default)

    def metadata_json(self) -> str:
        """The `headstart.input` metadata value, byte for byte as export has always written it."""
        return json.dumps(dict(self.metadata))

    def registry_entry(self) -> dict:
        """promotion.json's `contract`: the classes and what identifies the input."""
        return {"classes": list(self.classes), **dict(self.identity)}

    def same_input(self, other: InputContract | None) -> bool:
        """True when a client of `other` can call this model unchanged: same classes and same input."""
        return other is not None and (self.classes, self.identity) == (other.classes, other.identity)

    def model_config(self, name: str, max_batch_size: int):
        """Triton's ModelConfig message for this model: platform onnxruntime_onnx, dynamic batch axis, every version
        served (`version_policy: all`), dynamic batching, `probs` labelled by labels.txt (classification
        extension). A sample that is one string has dims [1] reshaped to [] (Triton needs at least one dim)."""
        from tritonclient.grpc import model_config_pb2 as mc

        config = mc.ModelConfig(name=name, platform="onnxruntime_onnx", max_batch_size=max_batch_size)
        config.version_policy.all.SetInParent()
        tensor = config.input.add(name=self.name, data_type=mc.DataType.Value(TRITON_TYPES[self.datatype]),
                                  dims=list(self.dims) or [1])
        if self.triton_format:
            tensor.format = mc.ModelInput.Format.Value(self.triton_format)
        if not self.dims:
            tensor.reshape.SetInParent()
        for output in OUTPUTS:
            out = config.output.add(name=output, data_type=mc.TYPE_FP32, dims=[len(self.classes)])
            if output == "probs":
                out.label_filename = "labels.txt"
        config.dynamic_batching.max_queue_delay_microseconds = QUEUE_DELAY_US
        return config

    def config_pbtxt(self, name: str, max_batch_size: int) -> str:
        """`model_config` in Triton's text format, headed by the contract's note."""
        from google.protobuf import text_format

        return self.config_note + text_format.MessageToString(self.model_config(name, max_batch_size),
                                                              use_short_repeated_primitives=True)
