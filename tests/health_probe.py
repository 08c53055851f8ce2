"""A health-check poller in a process of its own (so the client threads of a test or bench cannot delay it):
`python -m tests.health_probe PORT` asks GET /v2/health/ready every 50 ms until its stdin closes, then prints one JSON
line: {"polls": n, "worst": seconds, "failures": n, "slowest_at": seconds since start}."""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time


def poll(port: int, stop: threading.Event) -> dict:
    """Poll until `stop` is set; the count, the slowest answer and how many were not 200."""
    polls, worst, failures, slowest_at, start = 0, 0.0, 0, 0.0, time.perf_counter()
    while not stop.is_set():
        t = time.perf_counter()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/v2/health/ready")
            ok = conn.getresponse().status == 200
            conn.close()
        except OSError:
            ok = False
        took = time.perf_counter() - t
        polls, failures = polls + 1, failures + (not ok)
        if took > worst:
            worst, slowest_at = took, t - start
        stop.wait(0.05)
    return {"polls": polls, "worst": worst, "failures": failures, "slowest_at": slowest_at}


def main() -> None:
    stop = threading.Event()
    result = {}
    worker = threading.Thread(target=lambda: result.update(poll(int(sys.argv[1]), stop)))
    worker.start()
    sys.stdin.read()
    stop.set()
    worker.join()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
