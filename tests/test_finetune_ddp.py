"""Fine-tuning on several processes (finetune.nproc, torchrun, DDP over gloo on CPU) and bf16 on CPU: the same answer
at any process count, bitwise repeatable at a fixed one, a dying rank ends the run in one line naming it, a rerun
resumes; and the one-line refusals (more processes than GPUs, a batch N does not divide, bf16 on a CPU without AMX or
AVX512-BF16)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from tasks.core.errors import UserError
from tasks.training.cpu_bf16 import cpu_has_bf16
from tasks.training.distributed_launch import failure_line, resolve_nproc
from tasks.training.distributed_settings import threads_per_process
from tasks.training.distributed_world import World
from tests.conftest import project_params, venv_env

# small and real: the top block and the head train for 2 epochs on the built project's 96 px clip-art
DDP = ["finetune.strategy=last_n", "finetune.last_n=1", "finetune.epochs=2", "finetune.batch_size=16",
       "finetune.patience=5", "finetune.amp=off"]


def test_ranks_together_take_the_same_global_batches_as_one_process():
    """DistributedSampler shares, cut into batch_size / N per rank: the k-th step of all ranks covers the k-th global
    batch of the one-process order, so N changes neither the batches nor the step count (the LR schedule)."""
    n, batch, seed, epoch = 45, 8, 7, 3
    one = World().train_order(n, seed, epoch)
    ranks = [World(r, 2).train_order(n, seed, epoch) for r in range(2)]
    assert sorted(one.tolist()) == list(range(n)) and all(len(r) == 23 for r in ranks)  # 46: one index repeated
    steps = [torch.cat([r[k * 4:(k + 1) * 4] for r in ranks]) for k in range(-(-23 // 4))]
    padded = torch.cat([one, one[:1]])
    for k, step in enumerate(steps):
        assert sorted(step.tolist()) == sorted(padded[k * batch:(k + 1) * batch].tolist())
    assert World(1, 2).train_order(n, seed, epoch + 1).tolist() != ranks[1].tolist()  # set_epoch reshuffles


def test_process_count_mistakes_are_one_line_errors_or_warnings(built_project, capfd):
    paths, _, _ = built_project
    p = project_params(paths, ["finetune.strategy=full", "finetune.nproc=3"]).finetune
    with pytest.raises(UserError, match=r"finetune.batch_size=32 is not divisible by finetune.nproc=3"):
        resolve_nproc(p)
    if not torch.cuda.is_available():
        p = project_params(paths, ["finetune.strategy=full", "finetune.nproc=2", "finetune.device=cuda"]).finetune
        with pytest.raises(UserError, match=r"finetune.nproc=2 but this machine has 0 CUDA devices"):
            resolve_nproc(p)
        auto = project_params(paths, ["finetune.strategy=full", "finetune.nproc=auto"]).finetune
        assert resolve_nproc(auto) == 1  # auto on CPU: one process
    cores = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(cores)})  # a one-core machine, as far as the launcher can tell
        p = project_params(paths, ["finetune.strategy=full", "finetune.nproc=2", "finetune.device=cpu"]).finetune
        assert resolve_nproc(p) == 2
        assert threads_per_process(0, 2) == 1
    finally:
        os.sched_setaffinity(0, cores)
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning: finetune.nproc=2 on 1 core" in err[0]
    if len(cores) >= 2:
        assert threads_per_process(0, 2) == len(cores) // 2  # N processes share the cores, never oversubscribe


def test_a_failed_rank_is_reported_as_the_rank_that_failed_first_on_its_own(tmp_path):
    """The launcher's one line: a user error as itself; an exception of its own before the peers' lost-connection
    errors; else the rank torchrun saw killed by a signal (not the survivors it sent SIGTERM)."""
    def error(rank, kind, text, at):
        (tmp_path / f"error-rank{rank}.json").write_text(json.dumps({"rank": rank, "kind": kind, "error": text,
                                                                     "time": at}))

    report = ("  time      : 2026-12-03_17:00:01\n  host      : h\n  rank      : 0 (local_rank: 0)\n"
              "  exitcode  : -15 (pid: 11)\n"
              "  time      : 2026-12-03_17:00:00\n  host      : h\n  rank      : 1 (local_rank: 1)\n"
              "  exitcode  : -9 (pid: 12)\n")
    error(0, "lost_peer", "DistBackendError: Connection closed by peer", 1.0)
    line = failure_line(tmp_path, report, 1, 12.0)
    assert line.startswith("finetune: rank 1 died after 12s (killed by SIGKILL") and "\n" not in line
    error(1, "own", "RuntimeError: boom", 2.0)
    assert failure_line(tmp_path, report, 1, 3.0) == ("finetune: rank 1 failed after 3s: RuntimeError: boom (the run "
                                                      "was stopped)")
    error(1, "user", "label 'x' is not a class of models/head.npz; re-run the head stage", 2.0)
    user = "label 'x' is not a class of models/head.npz; re-run the head stage"
    assert failure_line(tmp_path, report, 1, 3.0) == user


def test_bf16_on_cpu_runs_a_real_step_where_the_cpu_has_it_and_is_refused_in_one_line_elsewhere(built_project):
    from tasks.training.epoch import resolve_device_and_amp

    paths, _, _ = built_project
    params = project_params(paths, [*DDP, "finetune.amp=bf16", "finetune.device=cpu"])
    if not cpu_has_bf16():
        with pytest.raises(UserError, match=r"finetune.amp=bf16 on CPU needs AMX or AVX512-BF16 .* use "
                                            r"finetune.amp=off") as err:
            resolve_device_and_amp(params.finetune)
        assert "\n" not in str(err.value)
        auto = project_params(paths, [*DDP, "finetune.amp=auto", "finetune.device=cpu"])
        assert resolve_device_and_amp(auto.finetune)[1] == "off"  # auto never picks emulated bf16
        return
    from tasks.training.epoch import train_pass
    from tasks.training.finetune_run import prepare
    from tasks.training.freezing import apply_depth, set_train_modes

    run = prepare(params, paths)
    assert run.amp == "bf16"
    apply_depth(run.units, 1)
    set_train_modes(run.model, run.units, 1, params.finetune.bn)
    before = [q.detach().clone() for q in run.units.parameters(0)]
    loss, _ = train_pass(run.forward, run.opt, run.sched, run.scaler, run.x_train, run.y_train, torch.arange(32),
                         params.finetune, run.make_batch, run.device, run.autocast, "bf16 step")
    assert torch.isfinite(torch.tensor(loss)) and loss < 3.0
    assert any(not torch.equal(a, b) for a, b in zip(before, run.units.parameters(0)))
    # auto on such a CPU measures at start-up (it never takes bf16 untimed) and keeps bf16 only above MIN_SPEEDUP
    from tasks.training.cpu_bf16 import MIN_SPEEDUP, bf16_pays

    auto = project_params(paths, [*DDP, "finetune.amp=auto", "finetune.device=cpu"])
    assert resolve_device_and_amp(auto.finetune)[1] == "auto-cpu"
    pays, ratio = bf16_pays(run.model, torch.from_numpy(np.array(run.x_train[:8])))
    assert ratio > 0 and pays == (ratio >= MIN_SPEEDUP)


def _finetune(root, overrides, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tasks.finetune"] + [a for o in overrides for a in ("-S", o)]
    return subprocess.Popen(cmd, cwd=root, env=venv_env(), stderr=subprocess.PIPE, text=True, **kw)


def _copy(paths, dest):
    shutil.copytree(paths.root, dest, symlinks=True)
    return type(paths)(dest)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # four fine-tune processes: minutes when other suites share the 2 cores
def test_two_processes_match_one_repeat_bitwise_and_resume_after_a_rank_dies(built_project, tmp_path):
    import psutil

    base, _, _ = built_project
    one = _copy(base, tmp_path / "one")
    proc = _finetune(one.root, [*DDP, "finetune.threads=1"])  # one process, one thread: as much CPU as each rank
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    s1 = json.loads((one.finetune / "summary.json").read_text())

    # two processes, with torchrun's default port taken by someone else: --standalone picks a free one
    two = _copy(base, tmp_path / "two")
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            taken.bind(("127.0.0.1", 29500))
            taken.listen()
        except OSError:
            pass  # already taken: all the better
        proc = _finetune(two.root, [*DDP, "finetune.nproc=2"])
        _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    s2 = json.loads((two.finetune / "summary.json").read_text())
    assert (s2["world_size"], s2["global_batch"], s2["per_process_batch"]) == (2, 16, 8)
    assert s2["threads"] == max(1, len(os.sched_getaffinity(0)) // 2) and (s2["device"], s2["amp"]) == ("cpu", "off")
    assert s1["world_size"] == 1 and s1["global_batch"] == 16
    h1, h2 = (pd.read_csv(p.finetune / "history.csv") for p in (one, two))
    assert h1.loc[0, "val_accuracy"] == h2.loc[0, "val_accuracy"]  # epoch 0, the frozen head, scored in shards
    assert (h1["val_accuracy"] - h2["val_accuracy"]).abs().max() <= 0.05  # 70 val images: within 3 of them
    assert (h1["train_loss"] - h2["train_loss"]).abs().max() < 0.1
    assert "Traceback" not in err and "ChildFailedError" not in err  # the user reads rank 0's log, not torchrun's

    # the same two processes again; rank 1 killed after the epoch-1 checkpoint: one line naming it, no hang
    again = _copy(base, tmp_path / "again")
    last = again.checkpoints / "finetune" / "last.pt"
    proc = _finetune(again.root, [*DDP, "finetune.nproc=2"])
    deadline = time.monotonic() + 600
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    (rank1,) = [c for c in psutil.Process(proc.pid).children(recursive=True)
                if c.environ().get("LOCAL_RANK") == "1" and "distributed_worker" in " ".join(c.cmdline())]
    rank1.send_signal(signal.SIGKILL)
    t_kill = time.monotonic()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and time.monotonic() - t_kill < 60
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "rank 1 died" in lines[0] and "SIGKILL" in lines[0], err[-2000:]
    assert "Traceback" not in err

    proc = _finetune(again.root, [*DDP, "finetune.nproc=2"])  # the rerun resumes after epoch 1
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0 and "resuming after epoch 1" in err, err[-3000:]
    h3 = pd.read_csv(again.finetune / "history.csv")
    pd.testing.assert_frame_equal(h2.drop(columns="seconds"), h3.drop(columns="seconds"), check_exact=True)
    s3 = json.loads((again.finetune / "summary.json").read_text())
    assert s3["final_state_sha256"] == s2["final_state_sha256"]  # same N, same seed: bitwise the same weights
    assert not last.exists()
