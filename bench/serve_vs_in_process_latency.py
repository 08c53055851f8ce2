"""What does `headstart serve` cost (or gain) per request against in-process ONNX Runtime? V2 REST with binary
tensors (tritonclient) on the same images in the same run: batch-1 latency p50/p99 and throughput with 1, 4 and 16
concurrent clients, dynamic batching on vs off. (RESULTS.md section 15)

Fairness on a small machine: the server's ONNX Runtime and the in-process baseline both get --threads intra-op
threads (default 1); the clients run in this process (one thread each, mostly waiting on sockets), the server in its
own. Both see the same CPU contention from the client side, so the ratio is what the network hop, the protocol and
the batcher cost or gain, not a difference in cores.

The project: --project (one with a champion, e.g. after `headstart demo`), or by default a scratch project of the
clip-art demo data on which every stage runs and whose candidate is promoted (`tasks.registry.promotion`) first.
The server is headstart's own (`python -m tasks.inference_server.main` in the project). One JSON row per engine and
client count.

Run:  python -m bench.serve_vs_in_process_latency [--project PATH] [--requests 400] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench._harness import built_project, emit, venv_env

QUESTION = "What does headstart serve cost per request against in-process ONNX Runtime?"


def _percentiles(ms: list[float]) -> tuple[float, float]:
    return statistics.median(ms), float(np.percentile(ms, 99))


def _in_process(model: Path, images: np.ndarray, n: int, threads: int) -> tuple[float, float, float]:
    from tasks.runtime.onnx_classifier import OnnxClassifier

    clf = OnnxClassifier(model, threads=threads)
    clf.probs(images[:1])
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        s = time.perf_counter()
        clf.probs(images[i % len(images)][None])
        lat.append((time.perf_counter() - s) * 1e3)
    return *_percentiles(lat), n / (time.perf_counter() - t0)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(root: Path, threads: int, batching: bool):
    http_port, grpc_port = _free_port(), _free_port()
    cmd = [sys.executable, "-m", "tasks.inference_server.main", "--http-port", str(http_port),
           "--grpc-port", str(grpc_port), "--threads", str(threads)] + ([] if batching else ["--no-batching"])
    proc = subprocess.Popen(cmd, cwd=root, stderr=subprocess.DEVNULL, env=venv_env())
    import tritonclient.http as httpclient

    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpclient.InferenceServerClient(f"127.0.0.1:{http_port}").is_server_ready():
                return proc, http_port
        except Exception:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def _served(port: int, name: str, images: np.ndarray, n: int, clients: int) -> tuple[float, float, float]:
    import tritonclient.http as httpclient

    def one_client(k: int) -> list[float]:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        lat = []
        for i in range(k, n, clients):
            x = images[i % len(images)][None]
            inp = httpclient.InferInput("images", list(x.shape), "UINT8")
            inp.set_data_from_numpy(x, binary_data=True)
            s = time.perf_counter()
            client.infer(name, [inp], outputs=[httpclient.InferRequestedOutput("probs")])
            lat.append((time.perf_counter() - s) * 1e3)
        return lat

    one_client(0)  # warm-up: connection, first session run
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        lat = [x for part in pool.map(one_client, range(clients)) for x in part]
    return *_percentiles(lat), n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, help="default: a scratch project of the clip-art demo, built here")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="10 images per class at 64 px, 40 requests per row, 1 and 4 "
                                                         "clients: checks the code path")
    args = ap.parse_args(argv)
    clients_list = (1, 4, 16)
    if args.quick:
        args.requests, clients_list = 40, (1, 4)

    from tasks.modality.samples import split_samples
    from tasks.registry.champions import champion_model

    params, paths = built_project("serve_vs_in_process_latency", args.project, args.quick, promote=True)
    model = champion_model(paths)
    if model is None:
        raise SystemExit(f"no champion in {paths.root}: run `headstart demo` there first")
    images, _ = split_samples(params, paths, "test", 64)
    name = params.export.triton_name
    base = _in_process(model, images, args.requests, args.threads)
    rows = [("in-process ONNX Runtime (baseline)", 1, *base),
            ("in-process ONNX Runtime, 2 threads", 1, *_in_process(model, images, args.requests, 2))]
    for batching in (False, True):
        proc, port = _start(paths.root, args.threads, batching)
        try:
            for clients in clients_list:
                rows.append((f"headstart serve, batching {'on' if batching else 'off'}", clients,
                             *_served(port, name, images, args.requests, clients)))
        finally:
            proc.terminate()
            proc.wait()
    for engine, clients, p50, p99, rps in rows:
        emit(QUESTION, engine=engine, clients=clients, p50_ms=round(p50, 2), p99_ms=round(p99, 2),
             req_s=round(rps, 1), x_baseline=round(rps / base[2], 2), images=len(images),
             size=params.backbone.input_size, requests=args.requests, threads=args.threads, quick=args.quick)


if __name__ == "__main__":
    main()
