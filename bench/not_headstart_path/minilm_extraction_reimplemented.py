"""Is ONNX Runtime faster than torch for MiniLM, and does dynamic padding help? all-MiniLM-L6-v2 (transformer + mean
pooling), BBC News docs, batch 32, 1 thread. (RESULTS.md section 14b)

NOT HEADSTART'S CODE PATH: the model, its export (torch.onnx.export of transformers' module, tokenizer outside the
graph) and both engines are re-implemented here, not headstart's text backbone graph (tokenizer in the graph) or its
features stage; what the pipeline's own text extraction does is in RESULTS.md section 14a.

Measured side by side in one run, the configurations interleaved over --reps passes (median pass reported):
  engines:  torch eager (inference_mode) | ONNX Runtime CPU (torch.onnx.export, dynamo=False, opset 18, dynamic
            batch and sequence axes; inputs input_ids / attention_mask / token_type_ids as int64)
  padding:  fixed 256 (every batch padded to max_length) | dynamic, docs in corpus order (pad to the longest doc in
            each batch) | dynamic, docs sorted by length before batching
Ratios are against torch eager fixed-256, the baseline measured in the same run. ORT and torch features are
compared per padding mode (max abs diff, must be <= 1e-4), and dynamic vs fixed padding within each engine.

Run from the repository root:

    python -m bench.not_headstart_path.minilm_extraction_reimplemented [--docs 128] [--batch 32] [--reps 3] [--quick]

Docs: a seeded (0) sample of the deduplicated BBC News corpus (same loading as minilm_transfer_reimplemented.py).
"""

from __future__ import annotations

import os

for _k, _v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
               "ORT_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}.items():
    os.environ.setdefault(_k, _v)

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.not_headstart_path import minilm_transfer_reimplemented as tt  # noqa: E402  (sets torch threads to 1)

torch.set_num_threads(1)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class Pooled(torch.nn.Module):
    """transformer + sentence-transformers mean pooling -> [batch, 384] features."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return tt.mean_pool(h.last_hidden_state, attention_mask)


def export(model: torch.nn.Module, path: Path, enc: dict) -> float:
    dummy = tuple(torch.from_numpy(enc[k][:2, :64]) for k in INPUTS)
    axes = {k: {0: "batch", 1: "sequence"} for k in INPUTS} | {"features": {0: "batch"}}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, dummy, str(path), dynamo=False, opset_version=18, input_names=list(INPUTS),
                          output_names=["features"], dynamic_axes=axes)
    return time.perf_counter() - t0


def ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def make_batches(enc: dict, batch: int, mode: str) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """[(doc indices, {input: int64 array})] for mode fixed | dynamic-unsorted | dynamic-sorted."""
    n = len(enc["lengths"])
    order = np.argsort(-enc["lengths"], kind="stable") if mode == "dynamic-sorted" else np.arange(n)
    out = []
    for i in range(0, n, batch):
        idx = order[i:i + batch]
        L = enc["input_ids"].shape[1] if mode == "fixed" else int(enc["lengths"][idx].max())
        out.append((idx, {k: np.ascontiguousarray(enc[k][idx, :L]) for k in INPUTS}))
    return out


def run_torch(model, batches, n, dim=384) -> np.ndarray:
    feats = np.zeros((n, dim), np.float32)
    with torch.inference_mode():
        for idx, b in batches:
            feats[idx] = model(*(torch.from_numpy(b[k]) for k in INPUTS)).numpy()
    return feats


def run_ort(sess, batches, n, dim=384) -> np.ndarray:
    feats = np.zeros((n, dim), np.float32)
    for idx, b in batches:
        feats[idx] = sess.run(["features"], b)[0]
    return feats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="16 docs, batch 8, 1 pass: checks the code path")
    args = ap.parse_args()
    if args.quick:
        args.docs, args.batch, args.reps = 16, 8, 1
    import onnxruntime as ort

    print(f"torch {torch.__version__} ({torch.get_num_threads()} thread), onnxruntime {ort.__version__} "
          f"(CPUExecutionProvider, intra_op 1, inter_op 1): all figures at 1 thread")
    corpus = tt.load_corpus(verbose=False)
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(corpus.texts), size=args.docs, replace=False))
    texts = [corpus.texts[i] for i in pick]
    enc = tt.tokenize(tt.load_tokenizer(), texts, args.max_length)
    n, lens = len(texts), enc["lengths"]
    print(f"{n} BBC docs (seeded sample of {len(corpus.texts)} unique), batch {args.batch}, max_length "
          f"{args.max_length}: tokens per doc after truncation median {np.median(lens):.0f}, min {lens.min()}, "
          f"{(lens == args.max_length).mean():.0%} of docs truncated at {args.max_length}")

    model = Pooled(tt.load_model("pretrained")).eval()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "minilm_meanpool.onnx"
        export_s = export(model, path, enc)
        sess = ort_session(path)
        print(f"ONNX export {export_s:.1f} s, {path.stat().st_size / 1e6:.1f} MB; ORT providers {sess.get_providers()}")

        modes = ["fixed", "dynamic-unsorted", "dynamic-sorted"]
        batches = {m: make_batches(enc, args.batch, m) for m in modes}
        engines = {"torch eager": lambda b: run_torch(model, b, n), "ONNX Runtime": lambda b: run_ort(sess, b, n)}
        configs = [(e, m) for e in engines for m in modes]
        feats, times = {}, {c: [] for c in configs}
        for c in configs:  # warm-up pass (also the features compared below)
            feats[c] = engines[c[0]](batches[c[1]])
        for _ in range(args.reps):
            for c in configs:
                t0 = time.perf_counter()
                engines[c[0]](batches[c[1]])
                times[c].append(time.perf_counter() - t0)

    base = n / np.median(times[("torch eager", "fixed")])
    print(f"\n| engine | padding | tokens/doc processed | docs/s (median of {args.reps}) | × torch fixed-{args.max_length} |")
    print("|---|---|---|---|---|")
    for e, m in configs:
        toks = sum(b["input_ids"].size for _, b in batches[m]) / n
        rate = n / np.median(times[(e, m)])
        label = f"fixed {args.max_length}" if m == "fixed" else m.replace("-", ", ")
        print(f"| {e} | {label} | {toks:.0f} | {rate:.1f} | {rate / base:.2f} |")
    print("\nfeature agreement (max abs diff over all docs x 384 dims):")
    for m in modes:
        d = float(np.abs(feats[("ONNX Runtime", m)] - feats[("torch eager", m)]).max())
        print(f"  ORT vs torch, {m:17s}: {d:.2e}  {'OK (<= 1e-4)' if d <= 1e-4 else 'FAIL (> 1e-4)'}")
    for e in engines:
        d = max(float(np.abs(feats[(e, m)] - feats[(e, 'fixed')]).max()) for m in modes[1:])
        print(f"  {e}: dynamic vs fixed padding: {d:.2e}")
    best = min(configs, key=lambda c: np.median(times[c]))
    print(f"\nfastest: {best[0]}, {best[1]}: {n / np.median(times[best]) / base:.2f}x torch eager fixed-"
          f"{args.max_length} ({base:.1f} docs/s), same run")


if __name__ == "__main__":
    main()
