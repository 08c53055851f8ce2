"""The limits `headstart serve` enforces before it does any work for a request, and their defaults.

Every limit bounds the memory and CPU one request can cost, so a hostile client costs at most
`max_in_flight x max_body_bytes` at once and never blocks the event loop for long:

- `max_body_bytes`: a REST body (after inflating gzip/deflate) and a gRPC message. Default: what the largest valid
  request needs, `max_batch_size` samples of the largest input, as raw bytes (binary tensor extension, gRPC) or as
  JSON text (up to 4 characters per UINT8 value, 2 per text byte), the JSON form capped at `JSON_CAP`.
- `max_json_bytes`: the JSON part of a REST request (the whole body, or the binary extension's header). JSON is parsed
  and validated holding Python's GIL (in a worker thread, but the event loop waits for the GIL all the same), so
  this caps how long one parse can hold up health checks and other clients: 2 MiB of UINT8 values parse in ~0.35 s
  on one busy core, 3.6 MB took 0.65 s. Larger tensors go as binary (tritonclient's `binary_data=True`, its
  default), which is not parsed element by element.
- `max_text_bytes`: one BYTES element (a text); `max_elements`: the elements of one BYTES input, both checked from
  the shape and the lengths before any element is decoded.
- `max_in_flight`: inference requests being read, decoded or run at once; beyond it, 503 with Retry-After (REST) or
  RESOURCE_EXHAUSTED (gRPC), before the body is read.
- `body_timeout_seconds`: a body that has not arrived in full by then is answered 408 (a slow client cannot hold a
  slot forever).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

JSON_CAP = 2 * 1024 * 1024
HEADER_SLACK = 64 * 1024      # the JSON header of a binary request, names, parameters
DEFAULT_TEXT_BYTES = 64 * 1024  # the models truncate to a few hundred tokens; 64 KiB is far beyond any of them
DEFAULT_IN_FLIGHT = 8
DEFAULT_BODY_TIMEOUT = 30.0
RETRY_AFTER_SECONDS = 1

_ITEM = {"UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "UINT32": 4, "INT32": 4, "UINT64": 8, "INT64": 8,
         "FP16": 2, "FP32": 4, "FP64": 8, "BOOL": 1}
_JSON_CHARS = {"UINT8": 4, "INT8": 5, "UINT16": 6, "INT16": 7, "UINT32": 11, "INT32": 12, "UINT64": 21, "INT64": 21,
               "FP16": 24, "FP32": 24, "FP64": 25, "BOOL": 6}  # widest JSON text of one value, with its comma


@dataclass(frozen=True)
class ServeLimits:
    """Limits for one served version (see the module docstring); `None` fields take the contract's default."""

    max_body_bytes: int | None = None
    max_json_bytes: int | None = None
    max_text_bytes: int = DEFAULT_TEXT_BYTES
    max_elements: int | None = None
    max_in_flight: int = DEFAULT_IN_FLIGHT
    body_timeout_seconds: float = DEFAULT_BODY_TIMEOUT

    def for_contract(self, contract) -> ServeLimits:
        """These limits with every unset one derived from `contract` (a ModelContract): its max_batch_size and its
        inputs' datatypes and dims."""
        binary = json = elements = 0
        for spec in contract.inputs:
            count = contract.max_batch_size * int(np.prod(spec.dims or (1,)))
            elements = max(elements, count)
            if spec.datatype == "BYTES":
                binary += count * (4 + self.max_text_bytes)
                json += count * (3 + 2 * self.max_text_bytes)
            else:
                binary += count * _ITEM[spec.datatype]
                json += count * _JSON_CHARS[spec.datatype]
        max_json = self.max_json_bytes or min(json + HEADER_SLACK, JSON_CAP)
        max_body = self.max_body_bytes or max(binary + HEADER_SLACK, max_json)
        return replace(self, max_body_bytes=max_body, max_json_bytes=min(max_json, max_body),
                       max_elements=self.max_elements or elements)

    def describe(self) -> str:
        """One line: the limits in force (for the start-up message)."""
        return (f"limits: body {_size(self.max_body_bytes)}, JSON {_size(self.max_json_bytes)}, "
                f"{self.max_elements} elements an input, texts {_size(self.max_text_bytes)} each, "
                f"{self.max_in_flight} requests in flight, body within {self.body_timeout_seconds:g} s")


def _size(n: int | None) -> str:
    if n is None:
        return "from the model"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"
