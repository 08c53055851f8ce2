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


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


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
                        instances: int = 0) -> None:
    """Serve until SIGINT/SIGTERM. Guarantees: nothing listens before the champion is loaded; a missing champion is
    a one-line UserError; both listeners close on the way out."""
    import uvicorn

    from tasks.inference_server.grpc_service import build_grpc_server
    from tasks.inference_server.inference import InferenceService
    from tasks.inference_server.rest import build_app

    check_port_free(host, http_port, "REST", "--http-port")
    check_port_free(host, grpc_port, "gRPC", "--grpc-port")
    service = InferenceService(paths, threads=threads, batching=batching, poll_seconds=poll_seconds,
                               instances=instances)
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
          f"{'on' if batching else 'off'}; Ctrl-C to stop", file=sys.stderr, flush=True)
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
    return ap


def run_from_args(args) -> None:
    """Serve with parsed `add_arguments` options on the current project."""
    if not is_loopback(args.host):
        print(f"warning: listening on {args.host}: headstart serve has no authentication; anyone who reaches this "
              f"port can call the model", file=sys.stderr)
    try:
        asyncio.run(serve_forever(default_paths(), args.host, args.http_port, args.grpc_port, args.threads,
                                  args.batching, args.poll_seconds, args.instances))
    except KeyboardInterrupt:
        pass


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run_from_args(add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0])).parse_args(argv))


if __name__ == "__main__":
    main()
