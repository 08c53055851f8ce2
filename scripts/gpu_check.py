"""Exercise every GPU path of headstart on this machine, each against the CPU in the same run (scripts/gpu_check.sh).

On a scratch project of real clip-art (Debian openclipart-png, ~40 images per class at 128 px; nothing downloaded):
1. feature extraction through ONNX Runtime's CUDA execution provider, checked against the CPU provider (parity);
2. fine-tuning on CUDA with bf16 autocast (where the GPU has it) and with fp16 autocast, against the CPU in fp32;
3. with two or more GPUs, fine-tuning under torchrun on every GPU (DDP over NCCL);
4. export, then evaluation of the exported graph on the CUDA provider against the CPU provider (parity and metrics);
5. `headstart serve` on CUDA answering tritonclient requests, against the same server on CPU.
Each path prints one line: OK/FAILED, its timing and the CPU's. Exit status 1 when a path failed, 0 otherwise; 0 with
one line where there is no CUDA device. `--cpu-rehearsal` runs the same sequence with the "GPU" side on the CPU (to
check the script itself on a machine without a GPU; its timings mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PER_CLASS = 40
SIZE = 128
BASE = [f"backbone.input_size={SIZE}", "ingest.val_fraction=0.2", "ingest.test_fraction=0.2",
        "features.engine=onnxruntime", "export.parity_images=16", "evaluate.cached_features=false"]
FINETUNE = ["finetune.strategy=last_n", "finetune.last_n=3", "finetune.epochs=1", "finetune.batch_size=32"]
CPU_ENV = {"CUDA_VISIBLE_DEVICES": ""}  # torch, hence headstart's provider choice, sees no GPU
failures: list[str] = []


def say(line: str) -> None:
    print(f"gpu_check: {line}", flush=True)


def stage(root: Path, name: str, overrides: list[str] = (), env: dict | None = None) -> float:
    """`python -m tasks.<name>` in the project (as dvc repro runs it); seconds taken. Raises with its log on failure."""
    cmd = [sys.executable, "-m", f"tasks.{name}"] + [a for o in overrides for a in ("-S", o)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{name} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}")
    return time.perf_counter() - t0


def check(name: str, fn) -> None:
    """Run one path; its one line says OK with figures, or FAILED with the error."""
    try:
        say(f"{name}: OK: {fn()}")
    except Exception as exc:  # every path is reported, the rest still run
        failures.append(name)
        say(f"{name}: FAILED: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")


def project(dest: Path, raw: Path) -> Path:
    from tasks.core.params import write_overrides

    dest.mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", dest / "params.yaml")
    write_overrides([f"ingest.source={raw}", "backbone.name=tf_efficientnet_lite0", *BASE], dest / "params.yaml")
    return dest


def features_parity(gpu: Path, cpu: Path, gpu_env: dict) -> str:
    import numpy as np

    from tasks.core.params import load_params
    from tasks.core.paths import ProjectPaths
    from tasks.extraction.feature_store import split_features

    for root in (gpu, cpu):
        stage(root, "ingest")
    t_gpu = stage(gpu, "features", env=gpu_env)
    t_cpu = stage(cpu, "features", env=CPU_ENV)
    diffs = []
    for split in ("train", "val", "test"):
        xg = split_features(load_params(gpu / "params.yaml"), ProjectPaths(gpu), split)[0]
        xc = split_features(load_params(cpu / "params.yaml"), ProjectPaths(cpu), split)[0]
        diffs.append(float(np.abs(np.asarray(xg) - np.asarray(xc)).max()))
    if max(diffs) > 1e-3:
        raise AssertionError(f"CUDA and CPU providers' features differ by {max(diffs):.2e} (> 1e-3)")
    return f"ONNX Runtime extraction: {t_gpu:.1f}s vs CPU provider {t_cpu:.1f}s ({t_cpu / t_gpu:.2f}x); max |df| " \
           f"{max(diffs):.1e}"


def finetune(gpu: Path, cpu: Path, amp: str, gpu_env: dict, rehearsal: bool, cpu_seconds: dict) -> str:
    for root in (gpu, cpu):
        if not (root / "models" / "head.npz").exists():
            stage(root, "head")
    if "cpu" not in cpu_seconds:
        cpu_seconds["cpu"] = stage(cpu, "finetune", [*FINETUNE, "finetune.device=cpu", "finetune.amp=off"], CPU_ENV)
    device = "cpu" if rehearsal else "cuda"
    t = stage(gpu, "finetune", [*FINETUNE, f"finetune.device={device}", f"finetune.amp={'off' if rehearsal else amp}"],
              gpu_env)
    s = json.loads((gpu / "models" / "finetune" / "summary.json").read_text())
    if s["device"] != device or (not rehearsal and s["amp"] != amp):
        raise AssertionError(f"ran on {s['device']} with amp {s['amp']}, not {device} with {amp}")
    return (f"1 epoch last_n=3 on {s['n_train']} images: {t:.1f}s vs CPU fp32 {cpu_seconds['cpu']:.1f}s "
            f"({cpu_seconds['cpu'] / t:.2f}x, process start included); val acc {s['best']['val_accuracy']:.3f}")


def finetune_ddp(gpu: Path, gpus: int, gpu_env: dict, cpu_seconds: dict) -> str:
    t = stage(gpu, "finetune", [*FINETUNE, "finetune.nproc=auto", "finetune.device=cuda"], gpu_env)
    s = json.loads((gpu / "models" / "finetune" / "summary.json").read_text())
    if s["world_size"] != gpus:
        raise AssertionError(f"world_size {s['world_size']}, expected {gpus}")
    return (f"{gpus} GPUs (NCCL): {t:.1f}s vs CPU fp32 1 process {cpu_seconds['cpu']:.1f}s; global batch "
            f"{s['global_batch']}, val acc {s['best']['val_accuracy']:.3f}")


def _sessions(model: Path, rehearsal: bool):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    gpu = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"] if rehearsal else
                               ["CUDAExecutionProvider", "CPUExecutionProvider"])
    if not rehearsal and gpu.get_providers()[0] != "CUDAExecutionProvider":
        raise AssertionError(f"ONNX Runtime did not take the CUDA provider (got {gpu.get_providers()})")
    return gpu, ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])


def export_and_evaluate(gpu: Path, gpu_env: dict, rehearsal: bool) -> str:
    import numpy as np

    from tasks.core.params import load_params
    from tasks.core.paths import ProjectPaths
    from tasks.modality.samples import split_samples

    stage(gpu, "export", env=gpu_env)
    t_gpu = stage(gpu, "evaluate", env=gpu_env)
    acc_gpu = json.loads((gpu / "models" / "metrics" / "metrics.json").read_text())["accuracy"]
    t_cpu = stage(gpu, "evaluate", env=CPU_ENV)
    acc_cpu = json.loads((gpu / "models" / "metrics" / "metrics.json").read_text())["accuracy"]
    images, _ = split_samples(load_params(gpu / "params.yaml"), ProjectPaths(gpu), "test", 32)
    s_gpu, s_cpu = _sessions(gpu / "models" / "model.onnx", rehearsal)
    name = s_cpu.get_inputs()[0].name
    pg, pc = (s.run(None, {name: images})[0] for s in (s_gpu, s_cpu))
    diff = float(np.abs(pg - pc).max())
    if diff > 1e-3 or (pg.argmax(1) != pc.argmax(1)).any() or abs(acc_gpu - acc_cpu) > 1e-9:
        raise AssertionError(f"CUDA vs CPU provider: max |dp| {diff:.1e}, test acc {acc_gpu:.4f} vs {acc_cpu:.4f}")
    return (f"evaluate (whole graph on the test split): {t_gpu:.1f}s vs CPU provider {t_cpu:.1f}s "
            f"({t_cpu / t_gpu:.2f}x); test acc {acc_gpu:.4f} both; max |dp| {diff:.1e} on 32 images")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_latency(root: Path, env: dict, batch) -> tuple[float, object]:
    """Median seconds of 20 tritonclient HTTP requests to `headstart serve` in `root`, and the last answer."""
    import statistics

    import tritonclient.http as httpclient

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--http-port", str(port), "--grpc-port",
                             str(_free_port())], cwd=root, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"headstart serve exited: {proc.stderr.read().strip().splitlines()[-1:]}")
            try:
                if client.is_server_ready():
                    break
            except Exception:  # not listening yet
                pass
            if time.time() > deadline:
                raise RuntimeError("headstart serve not ready in 180 s")
            time.sleep(0.3)
        times, out = [], None
        for _ in range(21):
            inp = httpclient.InferInput("images", list(batch.shape), "UINT8")
            inp.set_data_from_numpy(batch, binary_data=True)
            t0 = time.perf_counter()
            out = client.infer("headstart", [inp]).as_numpy("probs")
            times.append(time.perf_counter() - t0)
        return statistics.median(times[1:]), out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def serve(gpu: Path, gpu_env: dict) -> str:
    import numpy as np

    from tasks.core.params import load_params
    from tasks.core.paths import ProjectPaths
    from tasks.modality.samples import split_samples
    from tasks.registry.promotion import judge_and_publish

    params, paths = load_params(gpu / "params.yaml"), ProjectPaths(gpu)
    record = judge_and_publish(params, paths)
    if record["action"] not in ("promoted", "unchanged"):
        raise AssertionError(f"promotion: {record['action']}: {record.get('reason')}")
    images, _ = split_samples(params, paths, "test", 8)
    t_gpu, p_gpu = _serve_latency(gpu, gpu_env, images)
    t_cpu, p_cpu = _serve_latency(gpu, CPU_ENV, images)
    if (np.asarray(p_gpu).argmax(1) != np.asarray(p_cpu).argmax(1)).any():
        raise AssertionError("the CUDA and CPU servers disagree on a test image's class")
    return (f"headstart serve, tritonclient HTTP, batch 8: median {t_gpu * 1e3:.1f} ms vs CPU server "
            f"{t_cpu * 1e3:.1f} ms ({t_cpu / t_gpu:.2f}x); same classes")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-rehearsal", action="store_true", help="run every step with the GPU side on the CPU")
    ap.add_argument("--keep", action="store_true", help="keep the scratch projects (printed)")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not args.cpu_rehearsal:
        say("skipped: no CUDA device here (torch.cuda.is_available() is False); nothing was run")
        return 0
    import tasks.core.env  # noqa: F401  (no telemetry)
    from tasks.dataset.clipart_demo import materialise

    gpus = 0 if args.cpu_rehearsal else torch.cuda.device_count()
    gpu_env = CPU_ENV if args.cpu_rehearsal else {}
    name = "CPU rehearsal (timings mean nothing)" if args.cpu_rehearsal else \
        ", ".join(torch.cuda.get_device_name(i) for i in range(gpus))
    say(f"{name}; torch {torch.__version__}, CUDA {torch.version.cuda}")
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="headstart-gpu-check-"))
    try:
        raw = tmp / "raw"
        materialise(raw, per_class=PER_CLASS)
        gpu, cpu = project(tmp / "gpu", raw), project(tmp / "cpu", raw)
        cpu_seconds: dict = {}
        check("features (ONNX Runtime CUDA EP vs CPU EP)", lambda: features_parity(gpu, cpu, gpu_env))
        bf16 = args.cpu_rehearsal or torch.cuda.is_bf16_supported()
        for amp in ("bf16", "fp16") if bf16 else ("fp16",):
            check(f"finetune (CUDA, {amp} autocast)",
                  lambda amp=amp: finetune(gpu, cpu, amp, gpu_env, args.cpu_rehearsal, cpu_seconds))
        if gpus >= 2:
            check(f"finetune (DDP, NCCL, {gpus} processes)", lambda: finetune_ddp(gpu, gpus, gpu_env, cpu_seconds))
        else:
            say("finetune (DDP, NCCL): skipped: one GPU (needs two or more)")
        check("export + evaluate (ONNX Runtime CUDA EP vs CPU EP)",
              lambda: export_and_evaluate(gpu, gpu_env, args.cpu_rehearsal))
        check("serve (CUDA, tritonclient)", lambda: serve(gpu, gpu_env))
    finally:
        if args.keep:
            say(f"scratch projects kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    say(f"{'FAILED: ' + ', '.join(failures) if failures else 'all paths OK'} in {time.perf_counter() - t0:.0f}s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
