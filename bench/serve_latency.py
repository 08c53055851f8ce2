"""Benchmark 15: `headstart serve` (V2 REST with binary tensors, tritonclient) against in-process ONNX Runtime on the
same images in the same run: batch-1 latency p50/p99 and throughput with 1, 4 and 16 concurrent clients, dynamic
batching on vs off.

Fairness on a small machine: the server's ONNX Runtime and the in-process baseline both get --threads intra-op
threads (default 1); the clients run in this process (one thread each, mostly waiting on sockets), the server in its
own. Both see the same CPU contention from the client side, so the ratio is what the network hop, the protocol and
the batcher cost or gain, not a difference in cores.

Run:  .venv/bin/python bench/serve_latency.py [--requests 400] [--threads 1]   (in a project with a champion:
      `headstart demo` promotes one)
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(root: Path, threads: int, batching: bool):
    http_port, grpc_port = _free_port(), _free_port()
    cmd = [sys.executable, "-m", "tasks.inference_server.main", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
           "--threads", str(threads)] + ([] if batching else ["--no-batching"])
    proc = subprocess.Popen(cmd, cwd=root, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from tasks.core.params import load_params
    from tasks.core.paths import default_paths
    from tasks.modality.samples import split_samples
    from tasks.registry.champions import champion_model

    paths, params = default_paths(), load_params()
    model = champion_model(paths)
    if model is None:
        raise SystemExit("no champion: run `headstart demo` first")
    images, _ = split_samples(params, paths, "test", 64)
    name = params.export.triton_name
    base = _in_process(model, images, args.requests, args.threads)
    rows = [("in-process ONNX Runtime (baseline)", 1, *base),
            ("in-process ONNX Runtime, 2 threads", 1, *_in_process(model, images, args.requests, 2))]
    for batching in (False, True):
        proc, port = _start(paths.root, args.threads, batching)
        try:
            for clients in (1, 4, 16):
                rows.append((f"headstart serve, batching {'on' if batching else 'off'}", clients,
                             *_served(port, name, images, args.requests, clients)))
        finally:
            proc.terminate()
            proc.wait()
    print(f"{len(images)} test images at {params.backbone.input_size}px, {args.requests} batch-1 requests per row, "
          f"{args.threads} ONNX Runtime thread(s)")
    print(f"{'engine':<36}{'clients':>8}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>8}{'× baseline':>12}")
    for engine, clients, p50, p99, rps in rows:
        print(f"{engine:<36}{clients:>8}{p50:>9.2f}{p99:>9.2f}{rps:>8.1f}{rps / base[2]:>12.2f}")


if __name__ == "__main__":
    main()
