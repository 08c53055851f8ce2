"""Does hostile traffic slow down `headstart serve` for polite clients? Latency of a valid batch-1 image request
(V2 REST, binary tensors) while hostile clients run in parallel, against the same with no hostile traffic, in
interleaved rounds of the same run (RESULTS.md section 26). Also: the slowest health check during the hostile rounds
(from a process of its own), the server's RSS before, at peak and after, and the status codes the hostile requests
got.

Hostile clients (`--hostile` threads, each looping over the mix): gzip and deflate bombs (256 MiB inflated from
~256 KiB), a declared 256 MiB body, a chunked body past the limit, malformed JSON (a shape of strings, UINT8 1.7, a
3 MB bad value), a 10,000-character model name, a JSON body at the JSON limit with one bad value at its end (the
costliest refusal: parsed whole), a slow body (trickled, answered 408), and a 60 MiB gRPC message.

The project: --project (one with a champion), or a scratch clip-art project at the shipped 224 px (12 images per
class; 64 px with --quick) under bench/out/serve_under_hostile_load/, its candidate promoted without the gate.
The server is `python -m tasks.inference_server.main --threads 1` in the project.

Run:  python -m bench.serve_under_hostile_load [--project PATH] [--rounds 3] [--requests 60] [--hostile 3] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench._harness import OUT, REPO, emit, run_stages, scratch_project, stage_params, venv_env
from tests.test_serve_hostile import bomb, exchange, post, read_response

QUESTION = "How much does hostile traffic slow a valid request to headstart serve?"


def _project(existing: Path | None, quick: bool):
    from tasks.core.paths import ProjectPaths
    from tasks.core.stages import STAGES
    from tasks.registry.champions import champion_version, promote

    if existing is not None:
        paths = ProjectPaths(existing.resolve())
        return stage_params(paths), paths
    folder = OUT / "serve_under_hostile_load" / ("project-quick" if quick else "project")
    if (folder / "models" / "registry" / "champion.json").is_file():
        paths = ProjectPaths(folder)
        return stage_params(paths), paths
    paths = scratch_project(folder, "clipart", per_class=12, overrides=["backbone.input_size=64"] if quick else [])
    params = stage_params(paths)
    run_stages([s for s in STAGES if s != "evaluate"], params, paths)  # the bench needs a champion, not its score
    promote(paths, params, {"f1_macro": 0.0}, {"reason": "bench serve_under_hostile_load"}, test_keys=["bench"])
    assert champion_version(paths) == 1
    return params, paths


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(root: Path) -> tuple[subprocess.Popen, int, int]:
    http_port, grpc_port = _free_port(), _free_port()
    # -P: this checkout's server code (PYTHONPATH), not the copy of tasks/ the scratch project was made with
    proc = subprocess.Popen([sys.executable, "-P", "-m", "tasks.inference_server.main", "--http-port", str(http_port),
                             "--grpc-port", str(grpc_port), "--threads", "1", "--poll-seconds", "0.5",
                             "--body-timeout-seconds", "5"], cwd=root, stderr=subprocess.DEVNULL,
                            env=venv_env() | {"PYTHONPATH": str(REPO)})
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if exchange(http_port, "GET /v2/health/ready HTTP/1.1\r\nHost: x")[0] == 200:
                return proc, http_port, grpc_port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(field))) / 1024


def _hostile_mix(params, http_port: int, grpc_port: int):
    """(name, callable returning a status) for each hostile request class."""
    import socket

    size, name = params.backbone.input_size, params.export.triton_name
    path = f"/v2/models/{name}/infer"
    img = {"name": "images", "datatype": "UINT8", "shape": [1, size, size, 3]}
    gz, zl = bomb(256 << 20, 31), bomb(256 << 20, 15)
    n_json = (2 << 20) // 4 - 64  # values of a body just under the 2 MiB JSON limit, the last one bad
    at_limit = json.dumps({"inputs": [img | {"shape": [1, n_json], "data": [255] * (n_json - 1) + [1.5]}]},
                          separators=(",", ":")).encode()

    def chunked():
        with socket.create_connection(("127.0.0.1", http_port), timeout=30) as s:
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
            chunk = b"%x\r\n" % (1 << 20) + bytes(1 << 20) + b"\r\n"
            try:
                for _ in range(16):
                    s.sendall(chunk)
            except OSError:
                pass
            return read_response(s)[0]

    def slow_body():
        with socket.create_connection(("127.0.0.1", http_port), timeout=30) as s:
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode() + bytes(10))
            return read_response(s)[0]

    def grpc_60mib():
        import tritonclient.grpc as grpcclient

        big = np.zeros((1, 60 << 20), np.uint8)
        inp = grpcclient.InferInput("images", list(big.shape), "UINT8")
        inp.set_data_from_numpy(big)
        try:
            grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}").infer(name, [inp])
            return "OK"
        except Exception as exc:  # noqa: BLE001 - the status is the finding
            return str(exc).split("]")[0].split(".")[-1]

    def js(inputs) -> bytes:
        return json.dumps({"inputs": inputs}).encode()

    return [
        ("gzip bomb", lambda: post(http_port, path, gz, {"Content-Encoding": "gzip"})[0]),
        ("deflate bomb", lambda: post(http_port, path, zl, {"Content-Encoding": "deflate"})[0]),
        ("declared 256 MiB", lambda: post(http_port, path, b"", declared=256 << 20)[0]),
        ("chunked past the limit", chunked),
        ("shape of strings", lambda: post(http_port, path, js([img | {"shape": ["1", "a"], "data": [0]}]))[0]),
        ("UINT8 1.7", lambda: post(http_port, path, js([img | {"data": [1.7] * (size * size * 3)}]))[0]),
        ("3 MB bad value", lambda: post(http_port, path, js([img | {"data": ["x" * 3_000_000]}]))[0]),
        ("10,000-character name", lambda: post(http_port, "/v2/models/" + "m" * 10_000 + "/infer", b"{}")[0]),
        ("JSON at the limit, bad last value", lambda: post(http_port, path, at_limit)[0]),
        ("slow body", slow_body),
        ("gRPC 60 MiB message", grpc_60mib),
    ]


def _valid_latencies(params, http_port: int, n: int) -> tuple[list[float], int]:
    size = params.backbone.input_size
    blob = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8).tobytes()
    header = json.dumps({"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, size, size, 3],
                                     "parameters": {"binary_data_size": len(blob)}}]}).encode()
    path, headers = f"/v2/models/{params.export.triton_name}/infer", {"Inference-Header-Content-Length":
                                                                      str(len(header))}
    latencies, failed = [], 0
    for _ in range(n):
        t = time.perf_counter()
        status = post(http_port, path, header + blob, headers)[0]
        latencies.append((time.perf_counter() - t) * 1e3)
        failed += status != 200
    return latencies, failed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path)
    ap.add_argument("--rounds", type=int, default=3, help="quiet/hostile round pairs, interleaved")
    ap.add_argument("--requests", type=int, default=60, help="valid requests per round")
    ap.add_argument("--hostile", type=int, default=3, help="hostile client threads")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.requests = 1, 20
    params, paths = _project(args.project, args.quick)
    proc, http_port, grpc_port = _start(paths.root)
    try:
        mix = _hostile_mix(params, http_port, grpc_port)
        _valid_latencies(params, http_port, 20)  # warm-up
        time.sleep(1.0)
        rss_start = _rss_mb(proc.pid)
        quiet, hostile, failed, worst_health, statuses = [], [], 0, 0.0, Counter()
        for _ in range(args.rounds):
            lat, bad = _valid_latencies(params, http_port, args.requests)
            quiet += lat
            failed += bad
            stop = threading.Event()
            cursor = itertools.cycle(range(len(mix)))
            lock = threading.Lock()

            def attack():
                while not stop.is_set():
                    with lock:
                        i = next(cursor)
                    what, call = mix[i]
                    try:
                        result = call()
                    except OSError as exc:
                        result = f"{exc.__class__.__name__}"
                    with lock:
                        statuses[(what, result)] += 1

            probe = subprocess.Popen([sys.executable, "-m", "tests.health_probe", str(http_port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            attackers = [threading.Thread(target=attack) for _ in range(args.hostile)]
            for a in attackers:
                a.start()
            time.sleep(1.0)
            lat, bad = _valid_latencies(params, http_port, args.requests)
            hostile += lat
            failed += bad
            stop.set()
            for a in attackers:
                a.join()
            health = json.loads(probe.communicate("", timeout=60)[0])
            worst_health = max(worst_health, health["worst"])
        time.sleep(2.0)  # the watch loop (0.5 s) gives memory back
        rss_end, rss_peak = _rss_mb(proc.pid), _rss_mb(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    q50, h50 = statistics.median(quiet), statistics.median(hostile)
    q99, h99 = float(np.percentile(quiet, 99)), float(np.percentile(hostile, 99))
    emit(QUESTION, input_size=params.backbone.input_size, rounds=args.rounds, requests_per_round=args.requests,
         hostile_threads=args.hostile, quiet_p50_ms=round(q50, 1), hostile_p50_ms=round(h50, 1),
         p50_ratio=round(h50 / q50, 2), quiet_p99_ms=round(q99, 1), hostile_p99_ms=round(h99, 1),
         p99_ratio=round(h99 / q99, 2), valid_failed=failed, worst_health_s=round(worst_health, 3),
         rss_start_mb=round(rss_start), rss_peak_mb=round(rss_peak), rss_end_mb=round(rss_end),
         rss_end_ratio=round(rss_end / rss_start, 3),
         hostile_statuses={f"{what} -> {result}": n for (what, result), n in sorted(statuses.items())})


if __name__ == "__main__":
    main()
