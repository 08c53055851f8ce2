"""The protocol-independent core of `headstart serve`: the V2 (Open Inference Protocol) operations on the current
repository snapshot, request checks against the contract, dynamic batching, Triton's classification extension, and
the hot switch when a promotion lands. REST (`tasks.inference_server.rest`) and gRPC (`tasks.inference_server.grpc_service`) only
translate their wire formats to these calls.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from tasks.core.hardware import resolve_threads
from tasks.core.paths import ProjectPaths
from tasks.core.progress import log
from tasks.dataset.texts import normalise_text
from tasks.inference_server.batcher import DynamicBatcher
from tasks.inference_server.contract import V2_DTYPES, BadRequest, ModelContract
from tasks.inference_server.repository import Snapshot, load_snapshot, repository_fingerprint

SERVER_NAME = "headstart"
EXTENSIONS = ["classification", "binary_tensor_data", "model_repository"]


@dataclass
class Tensor:
    """A tensor on its way out (or in, decoded): V2 name, datatype and shape, and its values."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray


@dataclass
class WireTensor:
    """An input as it arrived: raw little-endian bytes or a JSON/typed list, decoded only after its name, datatype
    and shape passed the contract (so a batch of 10,000 is refused for its batch size, not for its bytes)."""

    name: str
    datatype: str
    shape: list
    raw: bytes | None = None
    values: object = None

    def decode(self) -> np.ndarray:
        return decode_tensor(self.name, self.datatype, self.shape, self.raw, self.values)


@dataclass
class RequestedOutput:
    name: str
    class_count: int = 0   # Triton's classification extension: top-k "score:index:label" strings instead of values


def _texts(name: str, items: list, count: int) -> np.ndarray:
    """BYTES elements as normalised texts (as ingest stores them: the model saw texts in this form), in an object
    array; BadRequest for a count that does not fill the shape or bytes that are not UTF-8."""
    if len(items) != count:
        raise BadRequest(f"input '{name}' has {len(items)} elements, its shape needs {count}")
    out = np.empty(count, dtype=object)
    for i, item in enumerate(items):
        try:
            out[i] = normalise_text(item.decode("utf-8") if isinstance(item, bytes) else str(item))
        except UnicodeDecodeError as exc:
            raise BadRequest(f"input '{name}': element {i} is not valid UTF-8 (byte at offset {exc.start})") from None
    return out


def _split_bytes(name: str, raw: bytes) -> list[bytes]:
    """The binary layout of a BYTES tensor (each element as a uint32 little-endian length, then its bytes), read by
    tritonclient's own decoder; BadRequest when an element's length or bytes run past the data."""
    import struct

    from tritonclient.utils import deserialize_bytes_tensor

    try:
        return list(deserialize_bytes_tensor(raw))
    except struct.error:
        raise BadRequest(f"input '{name}': BYTES data ends inside an element (its 4-byte length or its bytes run "
                         f"past the data)") from None


def decode_tensor(name: str, datatype: str, shape: list[int], raw: bytes | None, values) -> np.ndarray:
    """The numpy array of one input from raw little-endian bytes (binary extension / gRPC raw contents) or a JSON
    list; BadRequest when the bytes or values do not fill `shape` exactly. BYTES inputs are texts: an object
    array of normalised strings."""
    if datatype == "BYTES":
        count = int(np.prod([int(s) for s in shape])) if shape else 1
        items = _split_bytes(name, raw) if raw is not None else list(values or [])
        return _texts(name, items, count).reshape(shape)
    if datatype not in V2_DTYPES:
        raise BadRequest(f"input '{name}': datatype {datatype} is not a numeric V2 datatype")
    dtype = np.dtype(V2_DTYPES[datatype]).newbyteorder("<")
    try:
        count = int(np.prod([int(s) for s in shape])) if shape else 1
    except (TypeError, ValueError):
        raise BadRequest(f"input '{name}': shape {shape!r} is not a list of integers") from None
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise BadRequest(f"input '{name}' has {len(raw)} bytes, shape {shape} of {datatype} needs "
                             f"{count * dtype.itemsize}")
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    try:
        array = np.asarray(values, dtype=dtype).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"input '{name}': data is not a list of {datatype} values") from None
    if array.size != count:
        raise BadRequest(f"input '{name}' has {array.size} values, shape {shape} needs {count}")
    return array.reshape(shape)


def classification(probs: np.ndarray, k: int, classes: tuple[str, ...]) -> np.ndarray:
    """Triton's classification extension: per row, the top `k` as b"score:index:label", best first."""
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return np.array([[f"{row[i]:f}:{i}:{classes[i]}".encode() for i in idx] for row, idx in zip(probs, top)],
                    dtype=object)


class InferenceService:
    """V2 operations over the project's deploy repository; `snapshot` is swapped whole when a promotion lands."""

    def __init__(self, paths: ProjectPaths, threads: int = 0, batching: bool = True, poll_seconds: float = 1.0,
                 instances: int = 0):
        self.paths, self.threads, self.poll_seconds = paths, threads, poll_seconds
        self.snapshot: Snapshot = load_snapshot(paths, threads)
        champion = self.snapshot.versions[self.snapshot.champion].contract
        # as many concurrent ONNX Runtime calls as the cores hold at `threads` each (Triton's instance_group count)
        instances = instances or max(1, resolve_threads(0) // resolve_threads(threads))
        self.batcher = DynamicBatcher(champion.max_batch_size, champion.max_queue_delay_us, enabled=batching,
                                      instances=instances)

    # --- health and metadata ---------------------------------------------------------------------------------
    def server_metadata(self) -> dict:
        from importlib.metadata import version

        return {"name": SERVER_NAME, "version": version("headstart"), "extensions": EXTENSIONS}

    def model_metadata(self, name: str, version: str | None = None) -> dict:
        served = self.snapshot.get(name, version)
        meta = served.contract.metadata(served.version)
        meta["parameters"]["champion"] = self.snapshot.champion
        meta["parameters"]["in_deploy_repository"] = served.in_deploy_repository
        return meta

    def model_config(self, name: str, version: str | None = None) -> ModelContract:
        return self.snapshot.get(name, version).contract

    def model_ready(self, name: str, version: str | None = None) -> bool:
        self.snapshot.get(name, version)
        return True

    def index(self) -> list[dict]:
        snap = self.snapshot
        return [{"name": snap.name, "version": str(v), "state": "READY"} for v in sorted(snap.versions)]

    # --- inference -----------------------------------------------------------------------------------------------
    async def infer(self, name: str, version: str | None, inputs: list[WireTensor],
                    outputs: list[RequestedOutput]) -> tuple[str, int, list[Tensor]]:
        """(model name, version served, output tensors). BadRequest/NotFound before the model runs when the request
        does not fit the contract."""
        served = self.snapshot.get(name, version)
        contract = served.contract
        if len(inputs) != len(contract.inputs):
            raise BadRequest(f"model '{contract.name}' takes {len(contract.inputs)} input(s) "
                             f"({', '.join(t.name for t in contract.inputs)}), got {len(inputs)}")
        arrays = []
        for t in inputs:
            contract.check_input(t.name, t.datatype, t.shape)
            arrays.append(t.decode())
        requested = outputs or [RequestedOutput(t.name) for t in contract.outputs]
        for r in requested:
            contract.output(r.name)
            if r.class_count < 0:
                raise BadRequest(f"output '{r.name}': classification count must be positive, got {r.class_count}")
            if r.class_count and r.name != "probs":
                raise BadRequest(f"classification is offered on output 'probs' only, not '{r.name}'")
        names = sorted({r.name for r in requested})
        samples = arrays[0]
        if samples.dtype == object:  # texts: the request's [batch, 1] is the graph's [batch] (config.pbtxt reshape)
            samples = samples.reshape(-1)
        input_name = contract.inputs[0].name

        def run(batch: np.ndarray) -> list[np.ndarray]:
            return served.run({input_name: np.ascontiguousarray(batch)}, names)

        values = dict(zip(names, await self.batcher.submit((id(served.session), tuple(names)), run, samples)))
        result = []
        for r in requested:
            out = values[r.name]
            if r.class_count:
                labels = classification(out, r.class_count, contract.classes)
                result.append(Tensor(r.name, "BYTES", list(labels.shape), labels))
            else:
                result.append(Tensor(r.name, contract.output(r.name).datatype, list(out.shape), out))
        return contract.name, served.version, result

    # --- hot switch --------------------------------------------------------------------------------------------
    def reload(self) -> bool:
        """Load the repository again if a promotion changed it; True if the snapshot was replaced. In-flight requests
        finish on the snapshot they started with (its sessions stay alive while referenced)."""
        if repository_fingerprint(self.paths) == self.snapshot.fingerprint:
            return False
        new = load_snapshot(self.paths, self.threads, previous=self.snapshot)
        old_champion = self.snapshot.champion
        self.snapshot = new
        log(f"serve: repository changed; champion v{old_champion} -> v{new.champion}, "
            f"versions {sorted(new.versions)}")
        return True

    async def watch(self) -> None:
        """Poll the registry every `poll_seconds` and switch when a promotion lands; a half-finished promotion or a
        failed load keeps the current snapshot and is retried."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await asyncio.to_thread(self.reload)
            except Exception as exc:  # keep serving the old champion; say why the new one is not served yet
                log(f"serve: repository changed but could not be loaded yet ({str(exc).splitlines()[0][:200]}); "
                    f"still serving v{self.snapshot.champion}")
