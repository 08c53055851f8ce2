"""`headstart serve`: the champion over the V2 protocol, REST (uvicorn + FastAPI) and gRPC (grpc.aio) in one process
and one event loop, with the registry watched for promotions. Runnable alone: `python -m tasks.inference_server.main`.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import socket
import sys

from tasks.core.errors import UserError, exit_on_user_error
from tasks.core.paths import ProjectPaths, default_paths
from tasks.inference_server.limits import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_IN_FLIGHT,
    DEFAULT_TEXT_BYTES,
    JSON_CAP,
    ServeLimits,
)
from tasks.inference_server.memory import tune_allocator


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach: 127.0.0.0/8, ::1, an IPv4-mapped IPv6 loopback
    (::ffff:127.0.0.1) or the name localhost."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def check_port_free(host: str, port: int, what: str, flag: str) -> None:
    """A one-line UserError when `host:port` cannot be listened on (in use, or not an address of this machine)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and gRPC bind
            s.bind((host, port))
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} for {what} ({exc.strerror or exc}); pick another port with "
                        f"{flag}") from None


async def serve_forever(paths: ProjectPaths, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001,
                        threads: int = 0, batching: bool = True, poll_seconds: float = 1.0,
                        instances: int = 0, limits: ServeLimits | None = None, rows_per_run: int = 2) -> None:
    """Serve until SIGINT/SIGTERM. Guarantees: nothing listens before the champion is loaded; a missing champion is
    a one-line UserError; both listeners close on the way out; every request is held to `limits`."""
    import uvicorn

    from tasks.inference_server.grpc_service import build_grpc_server
    from tasks.inference_server.inference import InferenceService
    from tasks.inference_server.rest import build_app

    check_port_free(host, http_port, "REST", "--http-port")
    check_port_free(host, grpc_port, "gRPC", "--grpc-port")
    service = InferenceService(paths, threads=threads, batching=batching, poll_seconds=poll_seconds,
                               instances=instances, limits=limits, rows_per_run=rows_per_run)
    try:
        grpc_server = build_grpc_server(service, host, grpc_port)
    except RuntimeError as exc:  # grpc reports a failed bind as RuntimeError
        raise UserError(f"cannot listen on {host}:{grpc_port} for gRPC ({exc}); pick another port with --grpc-port") \
            from None
    config = uvicorn.Config(build_app(service), host=host, port=http_port, log_level="warning", access_log=False,
                            lifespan="off")
    http_server = uvicorn.Server(config)
    await grpc_server.start()
    watcher = asyncio.create_task(service.watch())
    snap = service.snapshot
    print(f"headstart serve: '{snap.name}' champion v{snap.champion} (versions {sorted(snap.versions)}), "
          f"V2 REST on http://{host}:{http_port}, gRPC on {host}:{grpc_port}; batching "
          f"{'on' if batching else 'off'}; {service.largest_limits().describe()}; Ctrl-C to stop", file=sys.stderr,
          flush=True)
    try:
        await http_server.serve()
    finally:
        watcher.cancel()
        await grpc_server.stop(grace=2)


def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only; there is no "
                                                        "authentication)")
    ap.add_argument("--http-port", type=int, default=8000, help="V2 REST port (Triton's default 8000)")
    ap.add_argument("--grpc-port", type=int, default=8001, help="V2 gRPC port (Triton's default 8001)")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: the machine's cores)")
    ap.add_argument("--instances", type=int, default=0, help="ONNX Runtime calls at once (Triton's instance_group "
                                                             "count; 0: cores / threads)")
    ap.add_argument("--no-batching", dest="batching", action="store_false",
                    help="run each request alone instead of batching concurrent ones (config.pbtxt's dynamic_batching)")
    ap.add_argument("--poll-seconds", type=float, default=1.0, help="how often the registry is checked for a new "
                                                                    "champion")
    limits = ap.add_argument_group("limits (docs/serving-safely.md)")
    limits.add_argument("--max-body-bytes", type=_positive, default=None,
                        help="largest request body / gRPC message (default: what max_batch_size samples of the "
                             "model's input need, as binary or JSON)")
    limits.add_argument("--max-json-bytes", type=_positive, default=None,
                        help=f"largest JSON part of a REST request (default: the model's JSON size, at most "
                             f"{JSON_CAP // 2**20} MiB; larger tensors go as binary data)")
    limits.add_argument("--max-text-bytes", type=_positive, default=DEFAULT_TEXT_BYTES,
                        help="largest BYTES element (one text) in bytes (default %(default)s)")
    limits.add_argument("--max-in-flight", type=_positive, default=DEFAULT_IN_FLIGHT,
                        help="inference requests handled at once; more get 503 + Retry-After (default %(default)s)")
    limits.add_argument("--body-timeout-seconds", type=float, default=DEFAULT_BODY_TIMEOUT,
                        help="a request body not received in full by then gets 408 (default %(default)s)")
    limits.add_argument("--rows-per-run", type=_positive, default=2,
                        help="samples per ONNX Runtime call: a batch of 32 runs in calls of this many, so its "
                             "activations cost this many samples' memory (default %(default)s)")
    return ap


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def limits_from_args(args) -> ServeLimits:
    """The ServeLimits the `add_arguments` options ask for (unset ones derived from each model's contract)."""
    return ServeLimits(max_body_bytes=args.max_body_bytes, max_json_bytes=args.max_json_bytes,
                       max_text_bytes=args.max_text_bytes, max_in_flight=args.max_in_flight,
                       body_timeout_seconds=args.body_timeout_seconds)


def run_from_args(args) -> None:
    """Serve with parsed `add_arguments` options on the current project."""
    if not is_loopback(args.host):
        print(f"warning: listening on {args.host}: headstart serve has no authentication; anyone who reaches this "
              f"port can call the model", file=sys.stderr)
    tune_allocator()  # before any thread starts: freed request buffers go back to the system
    try:
        asyncio.run(serve_forever(default_paths(), args.host, args.http_port, args.grpc_port, args.threads,
                                  args.batching, args.poll_seconds, args.instances, limits_from_args(args),
                                  args.rows_per_run))
    except KeyboardInterrupt:
        pass


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run_from_args(add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0])).parse_args(argv))


if __name__ == "__main__":
    main()
