"""`headstart serve` as a real server in a subprocess on loopback ports, called with tritonclient (HTTP and gRPC), the
package Triton's users call Triton with: predictions equal in-process ONNX Runtime, metadata equals config.pbtxt,
bad requests get a 4xx and cost no memory, every version stays reachable, a promotion switches with no failed
request."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, free_port, make_project, project_params, run, venv_env

grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


def _promote(paths, params, tag: str) -> int:
    from tasks.registry.champions import promote

    return promote(paths, params, {"f1_macro": 0.5}, {"reason": tag}, test_keys=[tag])


@pytest.fixture(scope="module")
def champion_project(built_project, tmp_path_factory):
    """A copy of the built project whose candidate was promoted: v1 is the champion."""
    src, params, _ = built_project
    root = tmp_path_factory.mktemp("serve")
    paths = make_project(root, None)
    shutil.copytree(src.root / "data", paths.root / "data", dirs_exist_ok=True, copy_function=os.link)
    shutil.copytree(src.models, paths.models, dirs_exist_ok=True)
    assert _promote(paths, params, "v1") == 1
    return paths, params


class Server:
    """`python -m tasks.inference_server.main` on free loopback ports; stopped (SIGTERM) on exit."""

    def __init__(self, root: Path, *extra: str):
        self.http_port, self.grpc_port = free_port(), free_port()
        self.log = root / f"serve-{self.http_port}.log"
        self.net_log = root / f"net-{self.http_port}.jsonl"  # the offline guard of tests/netguard, as in test_offline
        env = venv_env() | {"PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "netguard"), str(REPO)]),
                            "HEADSTART_NET_GUARD_LOG": str(self.net_log)}
        self.proc = subprocess.Popen([sys.executable, "-m", "tasks.inference_server.main", "--http-port", str(self.http_port),
                                      "--grpc-port", str(self.grpc_port), "--poll-seconds", "0.2", "--threads", "1",
                                      *extra], cwd=root, env=env,
                                     stdout=subprocess.DEVNULL, stderr=self.log.open("w"))
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if self.http().is_server_ready():
                    return
            except Exception:
                time.sleep(0.2)
        raise AssertionError(f"server not ready in 120 s:\n{self.log.read_text()}")

    def http(self, concurrency: int = 1):
        return httpclient.InferenceServerClient(f"127.0.0.1:{self.http_port}", concurrency=concurrency)

    def grpc(self):
        return grpcclient.InferenceServerClient(f"127.0.0.1:{self.grpc_port}")

    def rss_kb(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))

    def stop(self) -> None:
        """SIGTERM, then: the process is gone, and it tried no connection, lookup or bind beyond loopback."""
        self.proc.terminate()
        self.proc.wait(timeout=30)
        events = [json.loads(line) for line in self.net_log.read_text().splitlines()]
        assert any(e["event"] == "start" for e in events), "the network guard was not loaded"
        assert [e for e in events if e["event"] == "blocked"] == []


@pytest.fixture(scope="module")
def server(champion_project):
    paths, _ = champion_project
    srv = Server(paths.root, "--instances", "1")  # one instance: concurrent requests must queue, so they batch
    yield srv
    srv.stop()


def _held_out(paths, params, n: int = 48):
    from tasks.modality.samples import split_samples

    images, labels = split_samples(params, paths, "test", n)
    assert len(images) == n
    return images, labels


def _config(paths, params):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    folder = paths.models / "serving" / "triton" / params.export.triton_name
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()), folder


def _http_infer(client, name, batch, version="", **kw):
    inp = httpclient.InferInput("images", list(batch.shape), "UINT8")
    inp.set_data_from_numpy(batch, binary_data=True)
    out = [httpclient.InferRequestedOutput("probs", **kw)]
    return client.infer(name, [inp], model_version=version, outputs=out)


def _grpc_infer(client, name, batch, version=""):
    inp = grpcclient.InferInput("images", list(batch.shape), "UINT8")
    inp.set_data_from_numpy(batch)
    return client.infer(name, [inp], model_version=version, outputs=[grpcclient.InferRequestedOutput("probs")])


def test_v2_metadata_over_http_and_grpc_is_the_deploy_repositorys_config_pbtxt(server, champion_project):
    paths, params = champion_project
    config, folder = _config(paths, params)
    from tritonclient.grpc import model_config_pb2

    kind = {model_config_pb2.TYPE_UINT8: "UINT8", model_config_pb2.TYPE_FP32: "FP32"}
    expect_in = [(t.name, kind[t.data_type], [-1, *t.dims]) for t in config.input]
    expect_out = [(t.name, kind[t.data_type], [-1, *t.dims]) for t in config.output]
    meta = server.http().get_model_metadata(config.name)
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == expect_in
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == expect_out
    assert meta["parameters"]["classes"] == [c for c in (folder / "labels.txt").read_text().split("\n") if c]
    gmeta = server.grpc().get_model_metadata(config.name)
    assert [(t.name, t.datatype, list(t.shape)) for t in gmeta.inputs] == expect_in
    assert [(t.name, t.datatype, list(t.shape)) for t in gmeta.outputs] == expect_out
    assert server.grpc().get_model_config(config.name).config == config
    assert config.version_policy.HasField("all")  # Triton serves every version folder, as headstart serve does


def test_predictions_over_http_and_grpc_equal_in_process_onnx_runtime_with_batching_on(server, champion_project):
    from tasks.runtime.onnx_classifier import OnnxClassifier

    paths, params = champion_project
    name = params.export.triton_name
    images, _ = _held_out(paths, params)
    reference = OnnxClassifier(paths.models / "serving" / "triton" / name / "1" / "model.onnx").probs_batched(images)
    singles = [images[i : i + 1] for i in range(len(images))]
    with ThreadPoolExecutor(8) as pool:  # concurrent batch-1 requests: the server batches them
        http_probs = list(pool.map(lambda b: _http_infer(server.http(), name, b).as_numpy("probs"), singles))
        grpc_probs = list(pool.map(lambda b: _grpc_infer(server.grpc(), name, b).as_numpy("probs"), singles))
    for got in (np.concatenate(http_probs), np.concatenate(grpc_probs)):
        assert np.abs(got - reference).max() < 1e-5
        assert (got.argmax(1) == reference.argmax(1)).all()
    many = _http_infer(server.http(), name, images[:32]).as_numpy("probs")  # one request, 32 rows, in order
    assert np.abs(many - reference[:32]).max() < 1e-5
    stats = json.loads(_get(server, f"/v2/models/{name}/stats"))["model_stats"][0]
    assert stats["inference_count"] > stats["execution_count"], "concurrent requests were never batched"


def test_top_k_is_tritons_classification_extension(server, champion_project):
    paths, params = champion_project
    name = params.export.triton_name
    images, _ = _held_out(paths, params, 8)
    probs = _http_infer(server.http(), name, images).as_numpy("probs")
    classes = server.http().get_model_metadata(name)["parameters"]["classes"]
    top = _http_infer(server.http(), name, images, class_count=3).as_numpy("probs")
    assert top.shape == (len(images), 3)
    for row, p in zip(top, probs):
        score, index, label = row[0].decode().split(":")
        assert int(index) == p.argmax() and label == classes[p.argmax()] and abs(float(score) - p.max()) < 1e-5
    gtop = server.grpc().infer(name, [_grpc_input(images)], outputs=[grpcclient.InferRequestedOutput("probs", class_count=3)])
    assert [r[0] for r in gtop.as_numpy("probs")] == [r[0] for r in top]


def _grpc_input(images):
    inp = grpcclient.InferInput("images", list(images.shape), "UINT8")
    inp.set_data_from_numpy(images)
    return inp


def _get(server, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    conn.request("GET", path)
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    return resp.read()


def _bad_requests(size: int) -> list[tuple[str, bytes, dict]]:
    """(what is wrong, body, headers) for each kind of bad request."""
    def js(inputs) -> bytes:
        return json.dumps({"inputs": inputs}).encode()

    def binary(inputs, blob: bytes) -> tuple[bytes, dict]:
        header = js(inputs)
        return header + blob, {"Inference-Header-Content-Length": str(len(header))}

    img = {"name": "images", "datatype": "UINT8", "shape": [1, size, size, 3]}
    raw = bytes(size * size * 3)
    return [
        ("wrong dtype", js([img | {"datatype": "FP32", "data": [0.0] * (size * size * 3)}]), {}),
        ("wrong shape", js([img | {"shape": [1, size, size], "data": [0] * (size * size)}]), {}),
        ("batch over the limit", *binary([img | {"shape": [10_000, size, size, 3],
                                                 "parameters": {"binary_data_size": 3}}], b"abc")),
        ("byte size does not match the shape", *binary([img | {"parameters": {"binary_data_size": len(raw) - 1}}],
                                                       raw[:-1])),
        ("garbage JSON", b"{not json", {}),
        ("unknown input name", js([img | {"name": "pixels", "data": [0] * (size * size * 3)}]), {}),
    ]


def _post(conn, path, body, headers):
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


@pytest.mark.slow
def test_bad_requests_get_a_4xx_with_one_line_and_10000_of_them_grow_rss_by_under_10_percent(server,
                                                                                              champion_project):
    paths, params = champion_project
    name, size = params.export.triton_name, params.backbone.input_size
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    cases = _bad_requests(size)
    for what, body, headers in cases:
        status, text = _post(conn, f"/v2/models/{name}/infer", body, headers)
        message = json.loads(text)["error"]
        assert status == 400 and "\n" not in message and message, (what, status, text)
        if what == "batch over the limit":
            assert "max_batch_size" in message, message  # refused for its batch, before its bytes are looked at
    status, text = _post(conn, "/v2/models/no-such-model/infer", cases[0][1], {})
    assert status == 404 and "no-such-model" in json.loads(text)["error"]
    status, text = _post(conn, f"/v2/models/{name}/versions/99/infer", cases[0][1], {})
    assert status == 404 and "99" in json.loads(text)["error"]
    with pytest.raises(InferenceServerException, match="UINT8"):  # gRPC: INVALID_ARGUMENT with the same line
        inp = grpcclient.InferInput("images", [1, size, size, 3], "FP32")
        inp.set_data_from_numpy(np.zeros((1, size, size, 3), np.float32))
        server.grpc().infer(name, [inp])
    for _ in range(200):  # warm-up: allocator pools and caches settle before the baseline
        _post(conn, f"/v2/models/{name}/infer", *cases[_ % len(cases)][1:])
    before = server.rss_kb()
    for i in range(10_000):
        status, _ = _post(conn, f"/v2/models/{name}/infer", *cases[i % len(cases)][1:])
        assert 400 <= status < 500
    after = server.rss_kb()
    assert after < before * 1.10, f"RSS grew from {before} kB to {after} kB over 10,000 bad requests"
    images, _ = _held_out(paths, params, 4)
    assert _http_infer(server.http(), name, images).as_numpy("probs").shape[0] == 4  # still serving


def test_a_promotion_switches_the_running_server_with_no_failed_request_and_old_versions_stay_reachable(
        champion_project, tmp_path):
    from tasks.core.stages import stage_function

    paths, params = champion_project
    name = params.export.triton_name
    images, _ = _held_out(paths, params, 8)
    srv = Server(paths.root)
    try:
        v1_probs = _http_infer(srv.http(), name, images).as_numpy("probs")
        # a real second model: another head (C) on the same features, exported
        params2 = project_params(paths, ["head.C=0.01"])
        for stage in ("head", "finetune", "export"):
            stage_function(stage)(params2, paths)
        failures, answered, stop = [], [], threading.Event()

        def load():
            client = srv.http()
            while not stop.is_set():
                try:
                    answered.append(_http_infer(client, name, images[:2]).get_response()["model_version"])
                except Exception as exc:  # noqa: BLE001 - any failed request is the finding
                    failures.append(repr(exc))

        clients = [threading.Thread(target=load) for _ in range(4)]
        for c in clients:
            c.start()
        time.sleep(1.0)
        assert _promote(paths, params2, "v2") == 2
        deadline = time.time() + 30
        while srv.http().get_model_metadata(name)["versions"] != ["2"] and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        stop.set()
        for c in clients:
            c.join()
        assert not failures, failures[:3]
        assert "1" in answered and "2" in answered and answered[-1] == "2"
        assert srv.http().get_model_metadata(name)["versions"] == ["2"]
        v2_probs = _http_infer(srv.http(), name, images).as_numpy("probs")
        assert np.abs(v2_probs - v1_probs).max() > 1e-3  # another model answers now
        assert np.abs(_http_infer(srv.http(), name, images, version="1").as_numpy("probs") - v1_probs).max() < 1e-5
    finally:
        srv.stop()


@pytest.mark.slow  # a server
def test_a_champion_with_another_input_size_is_served_beside_the_old_versions(champion_project, tmp_path):
    from tasks.core.stages import stage_function

    src, params = champion_project
    paths = make_project(tmp_path / "p", None)
    shutil.copytree(src.root / "data", paths.root / "data", dirs_exist_ok=True, copy_function=os.link)
    shutil.copytree(src.models, paths.models, dirs_exist_ok=True)
    name = params.export.triton_name
    old_size = params.backbone.input_size
    small = project_params(paths, ["backbone.input_size=64"])
    for stage in ("features", "head", "finetune", "export"):
        stage_function(stage)(small, paths)
    new_version = _promote(paths, small, "64px")
    srv = Server(paths.root)
    try:
        client = srv.http()
        assert client.get_model_metadata(name)["inputs"][0]["shape"] == [-1, 64, 64, 3]
        old = client.get_model_metadata(name, model_version="1")
        assert old["inputs"][0]["shape"] == [-1, old_size, old_size, 3] and not old["parameters"]["in_deploy_repository"]
        images_old, _ = _held_out(src, params, 4)
        assert _http_infer(client, name, images_old, version="1").as_numpy("probs").shape == (4, len(old["parameters"]["classes"]))
        images_new, _ = _held_out(paths, small, 4)
        assert _http_infer(client, name, images_new, version=str(new_version)).as_numpy("probs").shape[0] == 4
        with pytest.raises(InferenceServerException, match="shape"):  # the old size on the new champion: 400
            _http_infer(client, name, images_old)
    finally:
        srv.stop()


def test_serve_without_a_champion_is_one_line_saying_how_to_get_one(tmp_path):
    paths = make_project(tmp_path / "empty", None)
    proc = run([sys.executable, "-m", "flows.cli", "serve", "--http-port", str(free_port()), "--grpc-port",
                str(free_port())], paths.root, check=False, timeout=120,
               env=venv_env() | {"PYTHONPATH": str(REPO)})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "headstart promote" in lines[0], proc.stderr


def test_a_port_in_use_is_one_line_naming_it(champion_project):
    import socket

    paths, _ = champion_project
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run([sys.executable, "-m", "flows.cli", "serve", "--http-port", str(free_port()), "--grpc-port",
                    str(port)], paths.root, check=False, timeout=120, env=venv_env() | {"PYTHONPATH": str(REPO)})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "--grpc-port" in lines[0], proc.stderr


def _wire(contract, samples: np.ndarray) -> np.ndarray:
    """Samples as a client's request carries them: as they are, or (BYTES) one UTF-8 string per [batch, 1] row."""
    if contract.datatype == "BYTES":
        return np.array([[s.encode()] for s in samples], dtype=object)
    return samples


# per modality: a request the contract refuses, and the one line that says why
MALFORMED = {"image": (np.zeros((1, 3, 3, 3), np.uint8), "must have shape"),
             "text": (np.array([[b"\xff\xfe bad"]], dtype=object), "not valid UTF-8")}


def test_a_promoted_model_of_each_modality_is_served_as_its_contract_says(modality_project, tmp_path):
    """Promoted, a model of either modality is served over HTTP and gRPC exactly as its InputContract and
    config.pbtxt say (BYTES for texts: [batch, 1] reshaped to the graph's [batch]), equal to in-process ONNX Runtime;
    top-1 over gRPC is Triton's classification extension; a malformed request is a 400 with one line."""
    from tritonclient.grpc import model_config_pb2

    from tasks.modality.input_contract import TRITON_TYPES
    from tasks.modality.registry import modality_for
    from tasks.modality.samples import split_samples
    from tasks.runtime.onnx_classifier import OnnxClassifier
    from tests.conftest import private_copy

    src, params, _ = modality_project
    paths = private_copy(src, tmp_path / "proj")
    assert _promote(paths, params, "v1") == 1
    name, clf = params.export.triton_name, OnnxClassifier(paths.onnx)
    contract = clf.contract
    config, folder = _config(paths, params)
    (spec,) = config.input
    assert spec.name == contract.name and model_config_pb2.DataType.Name(spec.data_type) == TRITON_TYPES[contract.datatype]
    assert list(spec.dims) == (list(contract.dims) or [1]) and spec.HasField("reshape") == (not contract.dims)
    assert (folder / "config.pbtxt").read_text().startswith(contract.config_note)  # text: load the tokenizer's ops

    samples, _ = split_samples(params, paths, "test", 9)
    if contract.datatype == "BYTES":
        samples = np.append(samples, np.array(["naïve café 😀"], dtype=object))
    expected = clf.probs(samples)
    wire = _wire(contract, samples)
    srv = Server(paths.root)
    try:
        meta = srv.http().get_model_metadata(name)
        assert meta["inputs"] == [{"name": contract.name, "datatype": contract.datatype,
                                   "shape": [-1, *(contract.dims or (1,))]}]
        inp = httpclient.InferInput(contract.name, list(wire.shape), contract.datatype)
        inp.set_data_from_numpy(wire, binary_data=True)
        got = srv.http().infer(name, [inp]).as_numpy("probs")
        assert np.abs(got - expected).max() < 1e-5
        g = grpcclient.InferInput(contract.name, list(wire.shape), contract.datatype)
        g.set_data_from_numpy(wire)
        top = srv.grpc().infer(name, [g], outputs=[grpcclient.InferRequestedOutput("probs", class_count=1)])
        assert [row[0].decode().split(":")[2] for row in top.as_numpy("probs")] == [
            clf.classes[i] for i in expected.argmax(1)]
        bad_data, why = MALFORMED[modality_for(params.backbone).name]
        bad = httpclient.InferInput(contract.name, list(bad_data.shape), contract.datatype)
        bad.set_data_from_numpy(bad_data, binary_data=True)
        with pytest.raises(InferenceServerException, match=why):
            srv.http().infer(name, [bad])
    finally:
        srv.stop()
