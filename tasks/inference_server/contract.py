"""A served model's contract, read from the deploy repository's own `config.pbtxt` (Triton's ModelConfig protobuf),
and the checks every request passes before it reaches ONNX Runtime.

The server never keeps a second, hand-written copy of the contract: names, datatypes, dims and the batch limit come
from the same text Triton would read, so a client written against `headstart serve` works unchanged against Triton.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.modality.input_contract import TRITON_TYPES

# Triton's TYPE_* names -> the V2 protocol's datatype, for the datatypes this server decodes
DATATYPES = {TRITON_TYPES[v2]: v2 for v2 in ("UINT8", "FP32", "INT64", "INT32", "FP16", "BYTES")}
V2_DTYPES = {"UINT8": np.uint8, "INT8": np.int8, "UINT16": np.uint16, "INT16": np.int16, "UINT32": np.uint32,
             "INT32": np.int32, "UINT64": np.uint64, "INT64": np.int64, "FP16": np.float16, "FP32": np.float32,
             "FP64": np.float64, "BOOL": np.bool_}


class BadRequest(ValueError):
    """A request the contract refuses: answered with 400 and this one-line message, never reaches the model."""


class NotFound(LookupError):
    """An unknown model name or version: answered with 404."""


class TooLarge(BadRequest):
    """A body, message or element over a limit (`tasks.inference_server.limits`): 413, before it is read further."""


class UnsupportedEncoding(BadRequest):
    """A Content-Encoding the server does not inflate: 415."""


class SlowBody(BadRequest):
    """A body that did not arrive within the body timeout: 408."""


class Busy(Exception):
    """More requests in flight than the limit: 503 with Retry-After (gRPC: RESOURCE_EXHAUSTED)."""


MAX_MESSAGE = 300


def shown(value, limit: int = 40) -> str:
    """`value` as an error message may quote it: a short repr (reprlib: strings cut to `limit` characters, lists to
    their first items, never formatted whole), so a client's 3 MB value or 10,000-character name is never echoed."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxtuple, short.maxdict = 2, 8, 8, 4
    short.maxstring = short.maxother = short.maxlong = limit
    return " ".join(short.repr(value).split())


def one_line(message: str) -> str:
    """An error message as it goes on the wire: one line of at most MAX_MESSAGE characters."""
    line = " ".join(str(message).split())
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 3] + "..."


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str          # V2 name: UINT8, FP32, BYTES
    dims: tuple[int, ...]  # without the batch axis, as in config.pbtxt

    def metadata(self) -> dict:
        """The V2 metadata entry: shape with -1 for the batch axis."""
        return {"name": self.name, "datatype": self.datatype, "shape": [-1, *self.dims]}


@dataclass(frozen=True)
class ModelContract:
    name: str
    platform: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    classes: tuple[str, ...]
    max_queue_delay_us: int
    config_text: str  # the config.pbtxt it was read from: what the ModelConfig endpoints return

    def config(self):
        """The ModelConfig protobuf message (Triton's schema)."""
        from google.protobuf import text_format

        return text_format.Parse(self.config_text, _schema().ModelConfig())

    def metadata(self, version: int) -> dict:
        """The V2 model-metadata response (plus the class list, which Triton keeps in labels.txt)."""
        return {"name": self.name, "versions": [str(version)], "platform": self.platform,
                "inputs": [t.metadata() for t in self.inputs], "outputs": [t.metadata() for t in self.outputs],
                "parameters": {"classes": list(self.classes), "max_batch_size": self.max_batch_size}}

    def check_input(self, name: str, datatype: str, shape: list[int]) -> None:
        """Raise BadRequest unless (name, datatype, shape) is what config.pbtxt declares and the batch is within
        max_batch_size (the data's size against the shape is checked when it is decoded)."""
        spec = next((t for t in self.inputs if t.name == name), None)
        if spec is None:
            raise BadRequest(f"unknown input {shown(name)}; model '{self.name}' takes "
                             f"{', '.join(t.name for t in self.inputs)}")
        if datatype != spec.datatype:
            raise BadRequest(f"input '{name}' must be {spec.datatype}, got {shown(datatype, 12)}")
        try:
            shape = [int(s) for s in shape]
        except (TypeError, ValueError):
            raise BadRequest(f"input '{name}': shape {shown(shape)} is not a list of integers") from None
        if len(shape) != len(spec.dims) + 1 or tuple(shape[1:]) != spec.dims:
            raise BadRequest(f"input '{name}' must have shape [batch, {', '.join(map(str, spec.dims))}], "
                             f"got {shown(shape)}")
        if not 1 <= shape[0] <= self.max_batch_size:
            raise BadRequest(f"batch of {shape[0]} is outside 1..{self.max_batch_size} (max_batch_size of "
                             f"'{self.name}')")

    def output(self, name: str) -> TensorSpec:
        spec = next((t for t in self.outputs if t.name == name), None)
        if spec is None:
            raise BadRequest(f"unknown output {shown(name)}; model '{self.name}' returns "
                             f"{', '.join(t.name for t in self.outputs)}")
        return spec


def _schema():
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def parse_contract(config_text: str, classes: list[str], source: str = "config.pbtxt") -> ModelContract:
    """The contract in `config_text` (Triton's ModelConfig text format); a one-line ValueError naming `source` when it
    does not parse or uses a datatype the server does not speak."""
    from google.protobuf import text_format

    schema = _schema()
    try:
        config = text_format.Parse(config_text, schema.ModelConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"{source}: not a Triton ModelConfig ({exc})") from None

    def specs(tensors) -> tuple[TensorSpec, ...]:
        out = []
        for t in tensors:
            kind = schema.DataType.Name(t.data_type)
            if kind not in DATATYPES:
                raise ValueError(f"{source}: tensor '{t.name}' has {kind}, which headstart serve does not support")
            out.append(TensorSpec(t.name, DATATYPES[kind], tuple(int(d) for d in t.dims)))
        return tuple(out)

    delay = config.dynamic_batching.max_queue_delay_microseconds if config.HasField("dynamic_batching") else 0
    return ModelContract(config.name, config.platform, int(config.max_batch_size), specs(config.input),
                         specs(config.output), tuple(classes), int(delay), config_text)


def read_contract(model_dir: Path) -> ModelContract:
    """The contract of a deploy-repository model folder (`config.pbtxt` + `labels.txt`)."""
    classes = [c for c in (model_dir / "labels.txt").read_text().split("\n") if c]
    return parse_contract((model_dir / "config.pbtxt").read_text(), classes, str(model_dir / "config.pbtxt"))
