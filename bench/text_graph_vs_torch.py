"""Is the shipped text model at least 3x torch eager, and does it keep its accuracy? (MiniLM on BBC News, the text
demo's data; bench/RESULTS.md section 28a)

What is timed is what ships: `models/model.onnx` (strings in: the tokenizer, the fused encoder and the head in one
graph) and, when export accepted it, `models/int8/model.onnx` (the same graph with its matrix multiplications
dynamically quantised), each against torch eager with the Hugging Face fast tokenizer (padding to the longest text,
truncation at backbone.max_length) and the same backbone + head (`tasks.modality.shipped_model`). Same texts (batches
of 32 from the test split), same threads, interleaved runs (torch, fp32, int8 in rotating order each round; the
ratio is the median of per-round ratios), at 1 and 2 threads.
Accuracy: both graphs on the whole test split, next to the fp32 graph's, in the same run.

The project is a scratch copy of the text demo (every BBC News article, `backbone.name=minilm`, max_length 256, the
shipped params otherwise plus `export.int8=true`), built once under bench/out/text_graph_vs_torch/ and reused
(`--fresh` rebuilds it; `--project` uses another).

Run:  python -m bench.text_graph_vs_torch [--threads 1 2] [--reps 3] [--batches 1] [--fresh] [--project DIR]
      [--also GRAPH ...]   (--also: other strings-in graphs to time the same way, e.g. an older export)
      python -m bench.text_graph_vs_torch --quick   (10 articles per topic at 64 tokens, 1 pair: checks the code path)
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
from pathlib import Path

import numpy as np

from bench._harness import OUT, emit, run_stages, scratch_project, stage_params

QUESTION = "Is the shipped text graph (tokenizer inside) at least 3x torch eager with the fast tokenizer?"


def cpu_line() -> str:
    """`lscpu`'s model name and the int8/bf16-relevant flags it reports."""
    from tasks.runtime.int8 import int8_instructions

    try:
        name = next(line.split(":", 1)[1].strip() for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        name = platform.processor() or "unknown"
    return f"{name}; int8: {int8_instructions()}"


def project(args):
    """(params, paths) of the bench's text project, built with every stage once if it is not there yet."""
    from tasks.core.paths import ProjectPaths
    from tasks.core.stages import STAGES

    if args.project is not None:
        paths = ProjectPaths(args.project.resolve())
        return stage_params(paths), paths
    dest = OUT / "text_graph_vs_torch" / ("project-quick" if args.quick else "project")
    overrides = ["export.int8=true"] + (["backbone.max_length=64"] if args.quick else [])
    if args.fresh or not (dest / "models" / "model.onnx").exists():
        paths = scratch_project(dest, "bbc", per_class=10 if args.quick else None, overrides=overrides)
        params = stage_params(paths)
        run_stages([s for s in STAGES if s in ("ingest", "features", "head", "export", "evaluate")], params, paths)
    else:
        from tasks.core.paths import ProjectPaths

        paths = ProjectPaths(dest)
    return stage_params(paths), paths


def torch_side(params, paths, threads: int):
    """texts -> probs by torch eager: the fast tokenizer (padding to the longest, truncation at max_length) and the
    shipped backbone + head, inference_mode, `threads` intra-op threads."""
    import torch

    from tasks.modality.shipped_model import shipped_classifier
    from tasks.modality.text import token_ids

    torch.set_num_threads(threads)
    model, tokenize = shipped_classifier(params, paths).eval(), token_ids(params)

    def run(texts):
        ids, mask = tokenize(texts)
        with torch.inference_mode():
            return model(torch.from_numpy(ids), torch.from_numpy(mask))[1].numpy()

    return run


def interleaved(runs: dict, reps: int) -> dict[str, dict]:
    """Each of `runs` (name -> callable) timed `reps` times after one untimed warm-up, the order rotated every round
    (a drift in the machine's speed hits every side alike). Per side: median seconds and the median over rounds of
    torch seconds / its seconds (`speedup`), the per-round ratios, not a ratio of medians."""
    import statistics
    import time

    names = list(runs)
    for name in names:
        runs[name]()
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - t0)
    base = seconds["torch"]
    return {n: {"median_s": statistics.median(s), "runs_s": [round(x, 3) for x in s],
                "speedup": statistics.median(b / x for b, x in zip(base, s))} for n, s in seconds.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=3, help="timed rounds (each times every side once)")
    ap.add_argument("--batches", type=int, default=1, help="batches of 32 test texts per timed run")
    ap.add_argument("--project", type=Path, default=None)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--also", type=Path, nargs="*", default=[], help="more strings-in graphs to time (not scored)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.batches, args.threads = 1, 1, [1]

    from tasks.modality.samples import split_samples
    from tasks.runtime.int8 import quantize_dynamic_int8
    from tasks.runtime.onnx_classifier import OnnxClassifier

    params, paths = project(args)
    test_x, test_y = split_samples(params, paths, "test", 100_000)
    graphs = {"fp32": paths.onnx}
    int8 = paths.models / "int8" / "model.onnx"
    if not int8.exists():  # export did not keep one (or int8 was off): the same recipe, built here
        int8 = OUT / "text_graph_vs_torch" / "int8-built-by-the-bench.onnx"
        int8.parent.mkdir(parents=True, exist_ok=True)
        quantize_dynamic_int8(paths.onnx, int8)
    graphs["int8"] = int8
    extra = {f"also:{g.name}": g for g in args.also}

    accuracy = {}
    for name, graph in graphs.items():
        clf = OnnxClassifier(graph, 0)
        probs = clf.probs_batched(test_x)
        accuracy[name] = float((np.array(clf.classes)[probs.argmax(1)] == test_y).mean())
    print(f"test accuracy on {len(test_y)} texts: " + ", ".join(f"{k} {v:.4f}" for k, v in accuracy.items()),
          flush=True)

    n = 32 * args.batches
    texts = np.resize(test_x, n)  # the first n test texts (repeated if the split is smaller)
    batches = [texts[i:i + 32] for i in range(0, n, 32)]
    for threads in args.threads:
        torch_run = torch_side(params, paths, threads)
        reference = np.concatenate([torch_run(b) for b in batches])
        runs = {"torch": lambda: [torch_run(b) for b in batches]}
        agree = {}
        for name, graph in (graphs | extra).items():
            clf = OnnxClassifier(graph, threads)
            got = np.concatenate([clf.probs(b) for b in batches])
            agree[name] = (float(np.abs(got - reference).max()), float((got.argmax(1) == reference.argmax(1)).mean()))
            runs[name] = (lambda clf: lambda: [clf.probs(b) for b in batches])(clf)
        load_before = os.getloadavg()
        timed = interleaved(runs, args.reps)
        load_after = os.getloadavg()
        for name in graphs | extra:
            emit(QUESTION, graph=name, path=str(graphs.get(name) or extra[name]), threads=threads, batch=32, texts=n,
                 max_length=params.backbone.max_length, cpu=cpu_line(),
                 test_accuracy=round(accuracy[name], 4) if name in accuracy else None,
                 fp32_test_accuracy=round(accuracy["fp32"], 4), test_texts=len(test_y),
                 max_abs_dp_vs_torch=agree[name][0], argmax_agree_vs_torch=agree[name][1],
                 torch_texts_s=round(n / timed["torch"]["median_s"], 2),
                 graph_texts_s=round(n / timed[name]["median_s"], 2), speedup_vs_torch=round(timed[name]["speedup"], 3),
                 torch_runs_s=timed["torch"]["runs_s"], graph_runs_s=timed[name]["runs_s"], reps=args.reps,
                 load_avg_before=[round(x, 2) for x in load_before], load_avg_after=[round(x, 2) for x in load_after])


if __name__ == "__main__":
    main()
