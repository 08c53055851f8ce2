"""The protocol-independent core of `headstart serve`: the V2 (Open Inference Protocol) operations on the current
repository snapshot, request checks against the contract, dynamic batching, Triton's classification extension, and
the hot switch when a promotion lands. REST (`tasks.inference_server.rest`) and gRPC (`tasks.inference_server.grpc_service`) only
translate their wire formats to these calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, replace

import numpy as np

from tasks.core.hardware import resolve_threads
from tasks.core.paths import ProjectPaths
from tasks.core.progress import log
from tasks.dataset.texts import normalise_text
from tasks.inference_server.batcher import DynamicBatcher
from tasks.inference_server.contract import V2_DTYPES, BadRequest, Busy, ModelContract, TooLarge, shown
from tasks.inference_server.limits import DEFAULT_TEXT_BYTES, ServeLimits
from tasks.inference_server.memory import MemoryReturner
from tasks.inference_server.repository import ServedVersion, Snapshot, load_snapshot, repository_fingerprint

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
    raw: bytes | memoryview | None = None
    values: object = None

    def decode(self, max_text_bytes: int = DEFAULT_TEXT_BYTES) -> np.ndarray:
        return decode_tensor(self.name, self.datatype, self.shape, self.raw, self.values, max_text_bytes)


@dataclass
class RequestedOutput:
    name: str
    class_count: int = 0   # Triton's classification extension: top-k "score:index:label" strings instead of values


def _texts(name: str, items: list, count: int, max_text_bytes: int) -> np.ndarray:
    """BYTES elements (bytes from the binary layout, str from JSON) as normalised texts (as ingest stores them: the
    model saw texts in this form), in an object array; BadRequest for a count that does not fill the shape, an element
    that is not a string, is longer than `max_text_bytes` or is not UTF-8."""
    if len(items) != count:
        raise BadRequest(f"input '{name}' has {len(items)} elements, its shape needs {count}")
    out = np.empty(count, dtype=object)
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = item.encode("utf-8", "surrogatepass")
        if not isinstance(item, (bytes, memoryview)):
            raise BadRequest(f"input '{name}': element {i} is {type(item).__name__}, BYTES elements are strings")
        if len(item) > max_text_bytes:
            raise TooLarge(f"input '{name}': element {i} is {len(item)} bytes, over the limit of {max_text_bytes} "
                           f"(--max-text-bytes)")
        try:
            out[i] = normalise_text(bytes(item).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise BadRequest(f"input '{name}': element {i} is not valid UTF-8 (byte at offset {exc.start})") from None
    return out


def _split_bytes(name: str, raw: bytes | memoryview, count: int, max_text_bytes: int) -> list[memoryview]:
    """The `count` elements of a BYTES tensor's binary layout (each a uint32 little-endian length, then its bytes),
    read one length at a time: an element over `max_text_bytes`, data ending inside an element, or bytes left after
    the `count`-th are a BadRequest before any further element is looked at (so 64 MiB of empty elements for a
    shape of [1, 1] costs one length read, not 16 million objects)."""
    import struct

    view, offset, out = memoryview(raw), 0, []
    for i in range(count):
        if offset + 4 > len(view):
            raise BadRequest(f"input '{name}': BYTES data ends after {i} of its {count} elements")
        (length,) = struct.unpack_from("<I", view, offset)
        if length > max_text_bytes:
            raise TooLarge(f"input '{name}': element {i} is {length} bytes, over the limit of {max_text_bytes} "
                           f"(--max-text-bytes)")
        if offset + 4 + length > len(view):
            raise BadRequest(f"input '{name}': BYTES element {i}'s {length} bytes run past the data")
        out.append(view[offset + 4 : offset + 4 + length])
        offset += 4 + length
    if offset != len(view):
        raise BadRequest(f"input '{name}': {len(view) - offset} bytes after the {count} elements its shape holds")
    return out


def _count(name: str, shape: list) -> int:
    try:
        dims = [int(s) for s in shape]
    except (TypeError, ValueError):
        raise BadRequest(f"input '{name}': shape {shown(shape)} is not a list of integers") from None
    if any(d < 0 for d in dims):
        raise BadRequest(f"input '{name}': shape {shown(dims)} has a negative dimension")
    return int(np.prod(dims, dtype=np.int64)) if dims else 1


def decode_tensor(name: str, datatype: str, shape: list[int], raw: bytes | None, values,
                  max_text_bytes: int = DEFAULT_TEXT_BYTES) -> np.ndarray:
    """The numpy array of one input from raw little-endian bytes (binary extension / gRPC raw contents, not copied)
    or a list of values (JSON, gRPC typed contents); BadRequest when the bytes or values do not fill `shape` exactly
    or a value is not of `datatype` (an integer type's values must be integers in its range). BYTES inputs are
    texts: an object array of normalised strings."""
    count = _count(name, shape)
    if datatype == "BYTES":
        items = _split_bytes(name, raw, count, max_text_bytes) if raw is not None else list(values or [])
        return _texts(name, items, count, max_text_bytes).reshape(shape)
    if datatype not in V2_DTYPES:
        raise BadRequest(f"input '{name}': datatype {shown(datatype, 12)} is not a numeric V2 datatype")
    dtype = np.dtype(V2_DTYPES[datatype]).newbyteorder("<")
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise BadRequest(f"input '{name}' has {len(raw)} bytes, shape {shown(shape)} of {datatype} needs "
                             f"{count * dtype.itemsize}")
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    values = [] if values is None else values
    if len(values) != count:
        raise BadRequest(f"input '{name}' has {len(values)} values, shape {shown(shape)} needs {count}")
    return _checked_values(name, datatype, dtype, values).reshape(shape)


def _checked_values(name: str, datatype: str, dtype: np.dtype, values) -> np.ndarray:
    """`values` as `dtype`, refused unless each is a value of `datatype`: booleans for BOOL, integers in range for
    the integer types (no booleans, floats or strings), numbers for the float types."""
    try:
        array = np.asarray(values)
    except (TypeError, ValueError, OverflowError):
        array = np.asarray([], dtype=object)
    kind = dtype.kind
    allowed = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}[kind]
    if array.ndim != 1 or array.dtype.kind not in allowed or \
            (kind in "iu" and array.dtype.kind == "b"):
        raise BadRequest(f"input '{name}': data is not a flat list of {datatype} values")
    if kind in "iu" and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise BadRequest(f"input '{name}': a value is outside {datatype}'s range {info.min}..{info.max}")
    return array.astype(dtype)


def classification(probs: np.ndarray, k: int, classes: tuple[str, ...]) -> np.ndarray:
    """Triton's classification extension: per row, the top `k` as b"score:index:label", best first."""
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return np.array([[f"{row[i]:f}:{i}:{classes[i]}".encode() for i in idx] for row, idx in zip(probs, top)],
                    dtype=object)


class InferenceService:
    """V2 operations over the project's deploy repository; `snapshot` is swapped whole when a promotion lands.

    Work a request causes (checks against the contract, decoding, inference) runs in worker threads, never on the
    event loop; at most `limits.max_in_flight` inference requests are admitted at once (`admit`)."""

    def __init__(self, paths: ProjectPaths, threads: int = 0, batching: bool = True, poll_seconds: float = 1.0,
                 instances: int = 0, limits: ServeLimits | None = None, rows_per_run: int = 2):
        self.paths, self.threads, self.poll_seconds = paths, threads, poll_seconds
        self.limits, self.rows_per_run = limits or ServeLimits(), max(1, rows_per_run)
        self.memory = MemoryReturner()
        self._in_flight = 0
        self._reload_lock = threading.Lock()
        self.snapshot: Snapshot = load_snapshot(paths, threads)
        champion = self.snapshot.versions[self.snapshot.champion].contract
        # as many concurrent ONNX Runtime calls as the cores hold at `threads` each (Triton's instance_group count)
        instances = instances or max(1, resolve_threads(0) // resolve_threads(threads))
        self.batcher = DynamicBatcher(champion.max_batch_size, champion.max_queue_delay_us, enabled=batching,
                                      instances=instances)

    # --- limits --------------------------------------------------------------------------------------------------
    def limits_for(self, contract: ModelContract) -> ServeLimits:
        """The limits a request to a version with `contract` is held to (unset ones derived from the contract)."""
        return self.limits.for_contract(contract)

    def largest_limits(self) -> ServeLimits:
        """The champion's limits with the largest body any served version accepts (gRPC's message limit is one
        number for the whole server)."""
        snap = self.snapshot
        own = self.limits_for(snap.versions[snap.champion].contract)
        largest = max(self.limits_for(v.contract).max_body_bytes for v in snap.versions.values())
        return replace(own, max_body_bytes=largest)

    @contextlib.contextmanager
    def admit(self):
        """Hold one of `max_in_flight` slots for an inference request, or raise Busy (never waits: a client told to
        retry costs nothing, a queued one holds its body in memory)."""
        if self._in_flight >= self.limits.max_in_flight:
            raise Busy(f"{self._in_flight} requests in flight, the limit (--max-in-flight); retry shortly")
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

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
    def _prepare(self, served: ServedVersion, inputs: list[WireTensor], outputs: list[RequestedOutput]):
        """(samples, output names, requested outputs) for a request to `served`: every check against the contract
        (names, datatypes, shapes, batch) before any element is decoded, then the decoding. Runs in a worker
        thread."""
        contract = served.contract
        if len(inputs) != len(contract.inputs):
            raise BadRequest(f"model '{contract.name}' takes {len(contract.inputs)} input(s) "
                             f"({', '.join(t.name for t in contract.inputs)}), got {len(inputs)}")
        for t in inputs:
            contract.check_input(t.name, t.datatype, t.shape)
        requested = outputs or [RequestedOutput(t.name) for t in contract.outputs]
        for r in requested:
            contract.output(r.name)
            if r.class_count < 0:
                raise BadRequest(f"output '{r.name}': classification count must be positive, got {r.class_count}")
            if r.class_count and r.name != "probs":
                raise BadRequest(f"classification is offered on output 'probs' only, not '{r.name}'")
        max_text = self.limits_for(contract).max_text_bytes
        samples = inputs[0].decode(max_text)
        if samples.dtype == object:  # texts: the request's [batch, 1] is the graph's [batch] (config.pbtxt reshape)
            samples = samples.reshape(-1)
        return samples, sorted({r.name for r in requested}), requested

    async def infer(self, name: str, version: str | None, inputs: list[WireTensor],
                    outputs: list[RequestedOutput]) -> tuple[str, int, list[Tensor]]:
        """(model name, version served, output tensors). BadRequest/NotFound before the model runs when the request
        does not fit the contract; checks, decoding and inference run off the event loop."""
        served = self.snapshot.get(name, version)
        contract = served.contract
        samples, names, requested = await asyncio.to_thread(self._prepare, served, inputs, outputs)
        input_name, step = contract.inputs[0].name, self.rows_per_run

        def run(batch: np.ndarray) -> list[np.ndarray]:
            # a few rows per ONNX Runtime call: a batch of 32 costs the activations of `rows_per_run` samples
            parts = [served.run({input_name: np.ascontiguousarray(batch[i : i + step])}, names)
                     for i in range(0, len(batch), step)]
            return parts[0] if len(parts) == 1 else [np.concatenate(p) for p in zip(*parts)]

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
        finish on the snapshot they started with (its sessions stay alive while referenced). One reload at a time:
        the watch loop and the repository extension's load never interleave, so an older load cannot replace a
        newer one; a promotion that lands during a load changes the fingerprint the load recorded (read before
        anything else), so the next reload picks it up."""
        with self._reload_lock:
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
        failed load keeps the current snapshot and is retried. Also gives memory back after large requests."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            await asyncio.to_thread(self.memory.release)
            try:
                await asyncio.to_thread(self.reload)
            except Exception as exc:  # keep serving the old champion; say why the new one is not served yet
                log(f"serve: repository changed but could not be loaded yet ({str(exc).splitlines()[0][:200]}); "
                    f"still serving v{self.snapshot.champion}")
