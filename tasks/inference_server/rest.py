"""The V2 REST endpoints (KServe Open Inference Protocol, as Triton serves them), on FastAPI: JSON tensors and
Triton's binary tensor extension (`Inference-Header-Content-Length`: a JSON header, then each binary tensor's raw
little-endian bytes in order; BYTES elements as 4-byte length + bytes). Errors are `{"error": "<one line>"}` with
400 (bad request) or 404 (unknown model or version); the server keeps serving.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tasks.inference_server.contract import BadRequest, NotFound
from tasks.inference_server.inference import InferenceService, RequestedOutput, Tensor, WireTensor

HEADER = "Inference-Header-Content-Length"


def tensor_bytes(t: Tensor) -> bytes:
    """An output's values as the wire carries them: raw little-endian bytes, or length-prefixed BYTES elements."""
    if t.datatype == "BYTES":
        from tritonclient.utils import serialize_byte_tensor  # each element as uint32 LE length + bytes

        return serialize_byte_tensor(np.asarray(t.data, dtype=object)).item()
    return np.ascontiguousarray(t.data).astype(t.data.dtype.newbyteorder("<")).tobytes()


def _body(raw: bytes, encoding: str | None) -> bytes:
    if not encoding or encoding == "identity":
        return raw
    try:
        return gzip.decompress(raw) if encoding == "gzip" else zlib.decompress(raw)
    except (OSError, zlib.error, EOFError):
        raise BadRequest(f"body is not valid {encoding} data") from None


def parse_infer_request(raw: bytes, header_length: str | None) -> tuple[dict, list[WireTensor], list[RequestedOutput]]:
    """(request JSON, input tensors, requested outputs) from a V2 REST body, JSON or binary-extension."""
    try:
        split = int(header_length) if header_length is not None else len(raw)
    except ValueError:
        raise BadRequest(f"{HEADER} must be an integer, got {header_length!r}") from None
    if not 0 <= split <= len(raw):
        raise BadRequest(f"{HEADER} {split} is outside the body's {len(raw)} bytes")
    try:
        request = json.loads(raw[:split])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"request body is not JSON ({exc.__class__.__name__} at byte {getattr(exc, 'pos', 0)})") \
            from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise BadRequest('request must be a JSON object with an "inputs" list')
    binary, offset, inputs = raw[split:], 0, []
    for item in request["inputs"]:
        if not isinstance(item, dict) or not {"name", "datatype", "shape"} <= item.keys():
            raise BadRequest('each input needs "name", "datatype" and "shape"')
        name, datatype, shape = str(item["name"]), str(item["datatype"]), item["shape"]
        if not isinstance(shape, list):
            raise BadRequest(f"input '{name}': shape must be a list, got {shape!r}")
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise BadRequest(f"input '{name}': binary_data_size {size} runs past the body's "
                                 f"{len(binary) - offset} remaining bytes")
            inputs.append(WireTensor(name, datatype, shape, raw=binary[offset : offset + size]))
            offset += size
        elif "data" in item:
            inputs.append(WireTensor(name, datatype, shape, values=item["data"]))
        else:
            raise BadRequest(f"input '{name}' has neither data nor binary_data_size")
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes after the last binary tensor")
    outputs = []
    for item in request.get("outputs") or []:
        if not isinstance(item, dict) or "name" not in item:
            raise BadRequest('each requested output needs a "name"')
        k = (item.get("parameters") or {}).get("classification", 0)
        if not isinstance(k, int):
            raise BadRequest(f"output '{item['name']}': classification must be an integer, got {k!r}")
        outputs.append(RequestedOutput(str(item["name"]), k))
    return request, inputs, outputs


def _wants_binary(request: dict, name: str) -> bool:
    for item in request.get("outputs") or []:
        if item.get("name") == name and "binary_data" in (item.get("parameters") or {}):
            return bool(item["parameters"]["binary_data"])
    return bool((request.get("parameters") or {}).get("binary_data_output", False))


def infer_response(request: dict, model: str, version: int, outputs: list[Tensor]) -> Response:
    """JSON response, or JSON header + binary tensors when the request asked for binary outputs."""
    body: dict = {"model_name": model, "model_version": str(version), "outputs": []}
    if "id" in request:
        body["id"] = request["id"]
    blobs = []
    for t in outputs:
        entry = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        if _wants_binary(request, t.name):
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


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def build_app(service: InferenceService) -> FastAPI:
    """The FastAPI app serving `service` over V2 REST."""
    app = FastAPI(title="headstart serve", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(BadRequest)
    async def bad_request(_, exc: BadRequest):
        return _error(400, str(exc))

    @app.exception_handler(NotFound)
    async def not_found(_, exc: NotFound):
        return _error(404, str(exc))

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
        raw = _body(await request.body(), request.headers.get("content-encoding"))
        parsed, inputs, outputs = parse_infer_request(raw, request.headers.get(HEADER))
        model, served, result = await service.infer(name, version, inputs, outputs)
        return infer_response(parsed, model, served, result)

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
