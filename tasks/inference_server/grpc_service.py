"""The V2 gRPC endpoints, implementing Triton's own service definition (`inference.GRPCInferenceService`, the stubs
shipped in tritonclient), so `tritonclient.grpc` talks to headstart serve exactly as to Triton. Inputs arrive as
`raw_input_contents` (tritonclient's default) or typed `contents`; outputs go back as `raw_output_contents`.
Bad requests end with INVALID_ARGUMENT, unknown models or versions with NOT_FOUND, each with a one-line message.
"""

from __future__ import annotations

import asyncio
import inspect

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tasks.inference_server.contract import BadRequest, Busy, NotFound, one_line, shown
from tasks.inference_server.inference import InferenceService, RequestedOutput, WireTensor
from tasks.inference_server.rest import tensor_bytes
from tasks.inference_server.v2_request import MAX_DIMS, MAX_TENSORS

# typed `contents` field per V2 datatype
_CONTENTS = {"UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
             "UINT64": "uint64_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
             "INT64": "int64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BOOL": "bool_contents",
             "BYTES": "bytes_contents"}


def _tensors(request: pb.ModelInferRequest) -> list[WireTensor]:
    """The request's inputs as WireTensors (raw contents as they came, typed contents as a list), after the counts
    that bound the work: at most MAX_TENSORS inputs of at most MAX_DIMS dimensions."""
    if len(request.inputs) > MAX_TENSORS or any(len(t.shape) > MAX_DIMS for t in request.inputs):
        raise BadRequest(f"at most {MAX_TENSORS} inputs of at most {MAX_DIMS} dimensions")
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    out = []
    for i, t in enumerate(request.inputs):
        shape = [int(s) for s in t.shape]
        if raw:
            out.append(WireTensor(t.name, t.datatype, shape, raw=raw[i]))
        else:
            field = _CONTENTS.get(t.datatype)
            if field is None:
                raise BadRequest(f"input {shown(t.name)}: datatype {shown(t.datatype, 12)} is not a V2 datatype")
            out.append(WireTensor(t.name, t.datatype, shape, values=list(getattr(t.contents, field))))
    return out


def _outputs(request: pb.ModelInferRequest) -> list[RequestedOutput]:
    out = []
    for o in request.outputs:
        k = o.parameters["classification"].int64_param if "classification" in o.parameters else 0
        out.append(RequestedOutput(o.name, int(k)))
    return out


class V2GrpcService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """GRPCInferenceService over an InferenceService; methods it does not offer answer UNIMPLEMENTED."""

    def __init__(self, service: InferenceService):
        self.service = service

    async def _guard(self, context, call):
        """call(), awaited when it returns a coroutine; a refusal ends the RPC with its one line (BadRequest:
        INVALID_ARGUMENT, NotFound: NOT_FOUND, Busy: RESOURCE_EXHAUSTED), never quoting more than a short prefix of
        the request."""
        try:
            result = call()
            return await result if inspect.isawaitable(result) else result
        except BadRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, one_line(str(exc)))
        except NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, one_line(str(exc)))
        except Busy as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, one_line(str(exc)))

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    async def ServerMetadata(self, request, context):
        meta = self.service.server_metadata()
        return pb.ServerMetadataResponse(name=meta["name"], version=meta["version"], extensions=meta["extensions"])

    async def ModelReady(self, request, context):
        ready = await self._guard(context, lambda: self.service.model_ready(request.name, request.version or None))
        return pb.ModelReadyResponse(ready=bool(ready))

    async def ModelMetadata(self, request, context):
        meta = await self._guard(context, lambda: self.service.model_metadata(request.name, request.version or None))
        tensor = lambda t: pb.ModelMetadataResponse.TensorMetadata(**t)  # noqa: E731
        return pb.ModelMetadataResponse(name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                                        inputs=[tensor(t) for t in meta["inputs"]],
                                        outputs=[tensor(t) for t in meta["outputs"]])

    async def ModelConfig(self, request, context):
        contract = await self._guard(context, lambda: self.service.model_config(request.name, request.version or None))
        return pb.ModelConfigResponse(config=contract.config())

    async def RepositoryIndex(self, request, context):
        models = [pb.RepositoryIndexResponse.ModelIndex(**m) for m in self.service.index()]
        return pb.RepositoryIndexResponse(models=models)

    async def RepositoryModelLoad(self, request, context):
        await self._guard(context, lambda: self.service.model_ready(request.model_name, None))
        await asyncio.to_thread(self.service.reload)
        return pb.RepositoryModelLoadResponse()

    async def ModelInfer(self, request, context):
        """The message arrived whole within grpc.max_receive_message_length (the body limit); its tensors are taken
        out and checked off the event loop, within the same in-flight bound as REST."""
        async def infer():
            with self.service.admit():
                self.service.snapshot.get(request.model_name, request.model_version or None)
                try:
                    tensors, outputs = await asyncio.to_thread(lambda: (_tensors(request), _outputs(request)))
                    return await self.service.infer(request.model_name, request.model_version or None, tensors,
                                                    outputs)
                finally:
                    self.service.memory.note(request.ByteSize())

        model, version, outputs = await self._guard(context, infer)
        response = pb.ModelInferResponse(model_name=model, model_version=str(version), id=request.id[:256])
        for t in outputs:
            response.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
            response.raw_output_contents.append(tensor_bytes(t))
        return response


def build_grpc_server(service: InferenceService, host: str, port: int) -> grpc.aio.Server:
    """A grpc.aio server with the V2 service added and bound to host:port (not yet started). A message larger than
    the REST body limit is refused by gRPC itself (RESOURCE_EXHAUSTED) before the handler sees it; at most a few
    times `max_in_flight` RPCs run at once (inference is bounded by `max_in_flight` itself)."""
    limits = service.largest_limits()
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limits.max_body_bytes),
                                      ("grpc.max_send_message_length", 64 * 1024 * 1024)],
                             maximum_concurrent_rpcs=4 * limits.max_in_flight + 16)
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(V2GrpcService(service), server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot listen on {host}:{port} (gRPC)")
    return server
