"""The V2 (Open Inference Protocol) REST inference request as typed pydantic models, as KServe's own V2 data models
describe it, but strict: every field has one JSON type, names and shapes are bounded, parameters are scalars, and an
input's `data` is validated against its `datatype` while the JSON is parsed (UINT8: integers 0..255, no booleans,
floats or strings; BOOL: true/false; FP*: numbers; BYTES: strings). Data is a flat list in row-major order, as
tritonclient sends it. A request that does not fit is a BadRequest naming the field, never quoting more than a short
prefix of what was sent.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    create_model,
)

from tasks.inference_server.contract import BadRequest, shown

MAX_NAME = 256
MAX_DIMS = 8
MAX_TENSORS = 16
MAX_PARAMETERS = 32

Name = Annotated[StrictStr, Field(min_length=1, max_length=MAX_NAME)]
Dim = Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]
Shape = Annotated[list[Dim], Field(max_length=MAX_DIMS, fail_fast=True)]
Scalar = Union[StrictBool, StrictInt, StrictFloat, Annotated[StrictStr, Field(max_length=1024)]]


def _int(lo: int, hi: int):
    return Annotated[StrictInt, Field(ge=lo, le=hi)]


# what one element of `data` may be, per V2 datatype (JSON numbers for floats: an integer is a valid FP32 value)
ELEMENTS = {"BOOL": StrictBool, "UINT8": _int(0, 2**8 - 1), "UINT16": _int(0, 2**16 - 1),
            "UINT32": _int(0, 2**32 - 1), "UINT64": _int(0, 2**64 - 1), "INT8": _int(-2**7, 2**7 - 1),
            "INT16": _int(-2**15, 2**15 - 1), "INT32": _int(-2**31, 2**31 - 1), "INT64": _int(-2**63, 2**63 - 1),
            "FP16": Union[StrictInt, StrictFloat], "FP32": Union[StrictInt, StrictFloat],
            "FP64": Union[StrictInt, StrictFloat], "BYTES": StrictStr}


class _Parameters(BaseModel):
    """V2 parameters: a map of names to bool, number or string (the known ones typed by the subclasses)."""

    model_config = ConfigDict(extra="allow", strict=True)
    __pydantic_extra__: dict[str, Scalar]


class InputParameters(_Parameters):
    binary_data_size: Annotated[StrictInt, Field(ge=0)] | None = None


class OutputParameters(_Parameters):
    binary_data: StrictBool | None = None
    classification: Annotated[StrictInt, Field(ge=0, le=10_000)] | None = None


class RequestParameters(_Parameters):
    binary_data_output: StrictBool | None = None


class _Input(BaseModel):
    model_config = ConfigDict(strict=True)
    name: Name
    shape: Shape
    parameters: InputParameters | None = None


# one model per datatype, so `data` is validated element by element as its datatype says while the JSON is parsed;
# fail_fast: the first bad element ends validation (a million bad values are one error, not a million error records)
_INPUTS = tuple(create_model(f"Input{kind}", __base__=_Input, datatype=(Literal[kind], ...),
                             data=(Annotated[list[element], Field(fail_fast=True)] | None, None))
                for kind, element in ELEMENTS.items())
RequestInput = Annotated[Union[_INPUTS], Field(discriminator="datatype")]


class RequestOutput(BaseModel):
    model_config = ConfigDict(strict=True)
    name: Name
    parameters: OutputParameters | None = None


class InferRequest(BaseModel):
    """A V2 inference request's JSON (the whole body, or the binary extension's header)."""

    model_config = ConfigDict(strict=True)
    id: Annotated[StrictStr, Field(max_length=MAX_NAME)] | None = None
    parameters: RequestParameters | None = None
    inputs: Annotated[list[RequestInput], Field(min_length=1, max_length=MAX_TENSORS)]
    outputs: Annotated[list[RequestOutput], Field(max_length=MAX_TENSORS)] | None = None

    def wants_binary(self, output: str) -> bool:
        """Whether `output` goes back as binary (the output's binary_data, else the request's binary_data_output)."""
        for o in self.outputs or []:
            if o.name == output and o.parameters is not None and o.parameters.binary_data is not None:
                return o.parameters.binary_data
        return bool(self.parameters and self.parameters.binary_data_output)


def parse_request_json(text: bytes | memoryview) -> InferRequest:
    """The typed request in `text`; BadRequest with the first problem (where, and what) otherwise."""
    try:
        return InferRequest.model_validate_json(bytes(text) if isinstance(text, memoryview) else text)
    except ValidationError as exc:
        raise BadRequest(_first_error(exc)) from None


def _first_error(exc: ValidationError) -> str:
    """One line: the first error's location (inputs[0].data[17]) and pydantic's message, which never quotes the
    value; an unknown datatype is named by a short prefix."""
    err = exc.errors(include_url=False, include_input=False)[0]
    kind, loc = err["type"], err["loc"]
    where = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            where += f"[{part}]"
        elif i and isinstance(loc[i - 1], int) and part in ELEMENTS and where.startswith("inputs"):
            continue  # the datatype tag pydantic adds to the location
        else:
            where += f".{part}" if where else str(part)
    if kind == "union_tag_invalid":
        return f"{where}: datatype {shown(err.get('ctx', {}).get('tag'), 16)} is not a V2 datatype " \
               f"({', '.join(ELEMENTS)})"
    if kind == "json_invalid":
        return f"request body is not JSON ({err['msg'].removeprefix('Invalid JSON: ')})"
    message = err["msg"]
    if kind.startswith(("int_", "bool_", "string_", "float_")) and where.split(".")[-1].startswith("data"):
        message += " (an element of data must be of the input's datatype)"
    return f"{where or 'request'}: {message}"
