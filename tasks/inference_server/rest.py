"""The V2 REST endpoints (KServe Open Inference Protocol, as Triton serves them), on FastAPI: JSON tensors and
Triton's binary tensor extension (`Inference-Header-Content-Length`: a JSON header, then each binary tensor's raw
little-endian bytes in order; BYTES elements as 4-byte length + bytes). Errors are `{"error": "<one line>"}` with
400 (bad request), 404 (unknown model or version), 408 (body too slow), 413 (over a limit), 415 (an encoding other
than gzip/deflate) or 503 with Retry-After (too many requests in flight); the server keeps serving. The body is read
under the limits of `tasks.inference_server.limits`; parsing (typed, `tasks.inference_server.v2_request`), decoding
and inference run in worker threads, so health and metadata keep answering while a large request is handled.
"""

from __future__ import annotations

import asyncio
import json
import zlib

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from tasks.core.progress import log
from tasks.inference_server.contract import (
    BadRequest,
    Busy,
    NotFound,
    SlowBody,
    TooLarge,
    UnsupportedEncoding,
    one_line,
    shown,
)
from tasks.inference_server.inference import InferenceService, RequestedOutput, Tensor, WireTensor
from tasks.inference_server.limits import RETRY_AFTER_SECONDS, ServeLimits
from tasks.inference_server.v2_request import InferRequest, parse_request_json

HEADER = "Inference-Header-Content-Length"


def tensor_bytes(t: Tensor) -> bytes:
    """An output's values as the wire carries them: raw little-endian bytes, or length-prefixed BYTES elements."""
    if t.datatype == "BYTES":
        from tritonclient.utils import serialize_byte_tensor  # each element as uint32 LE length + bytes

        return serialize_byte_tensor(np.asarray(t.data, dtype=object)).item()
    return np.ascontiguousarray(t.data).astype(t.data.dtype.newbyteorder("<")).tobytes()


ENCODINGS = ("identity", "gzip", "deflate")


async def read_body(request: Request, limits: ServeLimits) -> bytearray:
    """The request's body, inflated if gzip/deflate, held to `limits` while it arrives: a declared Content-Length
    over `max_body_bytes` is a 413 before a byte is read, a body (received or inflated) growing past it a 413 at that
    point (a 2 MiB deflate bomb inflates no more than the limit, chunk by chunk), any other encoding a 415, and a
    body not in within `body_timeout_seconds` a 408."""
    limit = limits.max_body_bytes
    encoding = (request.headers.get("content-encoding") or "identity").strip().lower()
    if encoding not in ENCODINGS:
        raise UnsupportedEncoding(f"Content-Encoding {shown(encoding, 20)} is not accepted; send identity, gzip or "
                                  f"deflate")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(f"Content-Length {shown(declared, 20)} is not a number")
        if int(declared) > limit:
            raise TooLarge(f"body of {int(declared)} bytes is over this model's limit of {limit} bytes "
                           f"(--max-body-bytes)")
    inflater = zlib.decompressobj(wbits=47) if encoding != "identity" else None  # 47: zlib or gzip header
    body, received = bytearray(), 0

    def add(data: bytes) -> None:
        if len(body) + len(data) > limit:
            raise TooLarge(f"body is over this model's limit of {limit} bytes (--max-body-bytes)"
                           + (f" once inflated ({encoding})" if inflater else ""))
        body.extend(data)

    try:
        async with asyncio.timeout(limits.body_timeout_seconds):
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise TooLarge(f"body is over this model's limit of {limit} bytes (--max-body-bytes)")
                if inflater is None:
                    add(chunk)
                    continue
                data = chunk
                while data:  # never more than the limit (+1 byte, to tell) out of one chunk
                    try:
                        add(inflater.decompress(data, limit - len(body) + 1))
                    except zlib.error:
                        raise BadRequest(f"body is not valid {encoding} data") from None
                    data = inflater.unconsumed_tail
    except TimeoutError:
        raise SlowBody(f"body not received within {limits.body_timeout_seconds:g} s") from None
    if inflater is not None and not inflater.eof:
        raise BadRequest(f"body is not valid {encoding} data (it ends early)")
    return body


def parse_infer_request(raw: bytes | bytearray, header_length: str | None,
                        max_json_bytes: int | None = None) -> tuple[InferRequest, list[WireTensor],
                                                                   list[RequestedOutput]]:
    """(typed request, input tensors, requested outputs) from a V2 REST body, JSON or binary-extension. The binary
    tensors are views of `raw`, not copies; the JSON part is refused (413) over `max_json_bytes` before it is
    parsed."""
    view = memoryview(raw)
    if header_length is not None and not header_length.strip().isdigit():
        raise BadRequest(f"{HEADER} must be an integer, got {shown(header_length, 20)}")
    split = int(header_length) if header_length is not None else len(view)
    if split > len(view):
        raise BadRequest(f"{HEADER} {split} is outside the body's {len(view)} bytes")
    if max_json_bytes is not None and split > max_json_bytes:
        raise TooLarge(f"the JSON part of the request is {split} bytes, over the limit of {max_json_bytes} "
                       f"(--max-json-bytes); send large tensors as binary data")
    request = parse_request_json(view[:split])
    binary, offset, inputs = view[split:], 0, []
    for item in request.inputs:
        size = item.parameters.binary_data_size if item.parameters else None
        if size is not None:
            if item.data is not None:
                raise BadRequest(f"input '{item.name}' has both data and binary_data_size")
            if offset + size > len(binary):
                raise BadRequest(f"input '{item.name}': binary_data_size {size} runs past the body's "
                                 f"{len(binary) - offset} remaining bytes")
            inputs.append(WireTensor(item.name, item.datatype, item.shape, raw=binary[offset : offset + size]))
            offset += size
        elif item.data is not None:
            inputs.append(WireTensor(item.name, item.datatype, item.shape, values=item.data))
        else:
            raise BadRequest(f"input '{item.name}' has neither data nor binary_data_size")
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes after the last binary tensor")
    outputs = [RequestedOutput(o.name, (o.parameters.classification or 0) if o.parameters else 0)
               for o in request.outputs or []]
    return request, inputs, outputs


def infer_response(request: InferRequest, model: str, version: int, outputs: list[Tensor]) -> Response:
    """JSON response, or JSON header + binary tensors when the request asked for binary outputs."""
    body: dict = {"model_name": model, "model_version": str(version), "outputs": []}
    if request.id is not None:
        body["id"] = request.id
    blobs = []
    for t in outputs:
        entry = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        if request.wants_binary(t.name):
            blob = tensor_bytes(t)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            flat = t.data.reshape(-1)
            entry["data"] = [b.decode() for b in flat] if t.datatype == "BYTES" else flat.tolist()
        body["outputs"].append(entry)
    header = json.dumps(body).encode()
    if not blobs:
        return Response(header, media_type="application/json")
    return Response(header + b"".join(blobs), media_type="application/octet-stream",
                    headers={HEADER: str(len(header))})


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


# refusal -> HTTP status; the most specific class first
STATUS = ((TooLarge, 413), (UnsupportedEncoding, 415), (SlowBody, 408), (BadRequest, 400), (NotFound, 404))


def build_app(service: InferenceService) -> FastAPI:
    """The FastAPI app serving `service` over V2 REST. Every refusal is `{"error": "<one line>"}` with its status;
    anything unexpected is a 500 with one line (logged), never a stack trace on the wire."""
    app = FastAPI(title="headstart serve", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(BadRequest)
    @app.exception_handler(NotFound)
    async def refused(_, exc: Exception):
        return _error(next(status for kind, status in STATUS if isinstance(exc, kind)), str(exc))

    @app.exception_handler(Busy)
    async def busy(_, exc: Busy):
        return _error(503, str(exc), {"Retry-After": str(RETRY_AFTER_SECONDS)})

    @app.exception_handler(ClientDisconnect)
    async def gone(_, exc: ClientDisconnect):
        return _error(400, "client disconnected before the body was complete")

    @app.exception_handler(Exception)
    async def unexpected(_, exc: Exception):
        log(f"serve: internal error: {exc.__class__.__name__}: {one_line(str(exc))}")
        return _error(500, f"internal error ({exc.__class__.__name__})")

    _server_routes(app, service)
    _model_routes(app, service)
    _repository_routes(app, service)
    return app


def _server_routes(app: FastAPI, service: InferenceService) -> None:
    """Server metadata and health: live and ready answer as soon as the app runs."""
    @app.get("/v2")
    async def server_metadata():
        return service.server_metadata()

    @app.get("/v2/health/live")
    async def live():
        return Response(status_code=200)

    @app.get("/v2/health/ready")
    async def ready():
        return Response(status_code=200)


def _model_routes(app: FastAPI, service: InferenceService) -> None:
    """Per model (and version): metadata, config (Triton's ModelConfig as JSON), readiness, inference, statistics."""
    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None):
        return service.model_metadata(name, version)

    @app.get("/v2/models/{name}/config")
    @app.get("/v2/models/{name}/versions/{version}/config")
    async def model_config(name: str, version: str | None = None):
        from google.protobuf import json_format

        return json_format.MessageToDict(service.model_config(name, version).config(),
                                         preserving_proto_field_name=True)

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None):
        service.model_ready(name, version)
        return Response(status_code=200)

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None):
        """Refusals in order of cost: unknown model (404), too many in flight (503), body over the limit (413),
        then the request itself (400), parsed and run off the event loop."""
        limits = service.limits_for(service.snapshot.get(name, version).contract)
        with service.admit():
            raw = await read_body(request, limits)
            try:
                parsed, inputs, outputs = await asyncio.to_thread(parse_infer_request, raw,
                                                                  request.headers.get(HEADER), limits.max_json_bytes)
                model, served, result = await service.infer(name, version, inputs, outputs)
                return await asyncio.to_thread(infer_response, parsed, model, served, result)
            finally:
                service.memory.note(len(raw))

    @app.get("/v2/models/{name}/stats")
    @app.get("/v2/models/{name}/versions/{version}/stats")
    async def model_stats(name: str, version: str | None = None):
        """Triton's statistics extension, reduced to its counts (all versions together): inference_count (samples) >
        execution_count (ONNX Runtime calls) means requests were batched."""
        served = service.snapshot.get(name, version)
        b = service.batcher
        return {"model_stats": [{"name": name, "version": str(served.version), "inference_count": b.rows_run,
                                 "execution_count": b.batches_run, "largest_batch": b.largest_batch}]}


def _repository_routes(app: FastAPI, service: InferenceService) -> None:
    """Triton's repository extension: the index, and load (re-read the deploy repository now)."""
    @app.post("/v2/repository/index")
    async def index():
        return service.index()

    @app.post("/v2/repository/models/{name}/load")
    async def load(name: str):
        service.snapshot.get(name, None)
        await asyncio.to_thread(service.reload)
        return Response(status_code=200)
