"""Is ONNX Runtime faster than torch at extracting features, model-only and end to end? (Lite0, 224 px, batch 32,
clip-art images, RESULTS.md section 1; or MiniLM on BBC News with --data bbc)

In a scratch project with the clip-art demo data (--data bbc: BBC News, the text backbone), after the ingest stage,
measured side by side in one run:
  - model-only: pre-decoded batches (uint8 pixels, or texts) -> features, for the baseline and headstart's engines
    over the same model (`modality.build_model`), each engine paired with the baseline (`bench._harness.paired`).
    Images: the baseline is torch eager NCHW (a naive recipe of this bench), the candidates headstart's torch engine
    (channels_last) and its ONNX Runtime engine over the modality's exported backbone graph. Texts: the baseline is
    headstart's torch engine, the candidate its ONNX Runtime engine over the string-input graph (tokenizer inside);
  - decode-only: the features stage's decoder (file -> checked uint8 at the input size, or text), one thread;
  - end-to-end: files -> feature store through the features stage's own extraction loop
    (`tasks.extraction.extract.extract_to_store`: decode pool one batch ahead), a fresh store per run, paired.

Run:  python -m bench.onnx_vs_torch_extraction [--data clipart|bbc] [--images 256] [--size 224] [--batch 32]
      [--threads 0] [--decode-workers N] [--reps 3] [--workdir bench/out/onnx_vs_torch_extraction] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import math
import tempfile
from pathlib import Path

from bench._harness import OUT, emit, paired, run_stage, scratch_project, stage_params, time_once

QUESTION = "Is ONNX Runtime faster than torch at extracting features?"


class TorchNCHW:
    """The naive baseline: float NCHW contiguous input, default memory format (not headstart's engine)."""

    name = "torch-nchw"

    def __init__(self, model, threads):
        import torch

        torch.set_num_threads(threads)
        self.model = model.eval()

    def run(self, batch):
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
            return self.model(x).numpy()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["clipart", "bbc"], default="clipart")
    ap.add_argument("--images", type=int, default=256, help="images (or texts) extracted")
    ap.add_argument("--size", type=int, default=224, help="images: pixels per side")
    ap.add_argument("--max-length", type=int, default=256, help="texts: tokens per text")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--decode-workers", type=int, default=None, help="default: params.yaml features.decode_workers")
    ap.add_argument("--reps", type=int, default=3, help="timed pairs per comparison")
    ap.add_argument("--workdir", type=Path, default=OUT / "onnx_vs_torch_extraction")
    ap.add_argument("--quick", action="store_true", help="32 images at 96 px (16 texts at 64 tokens), one pair: "
                                                         "checks the code path")
    args = ap.parse_args(argv)
    text = args.data == "bbc"
    if args.quick:
        args.images, args.size, args.max_length, args.reps = (16 if text else 32), 96, 64, 1

    from tasks.core.hardware import resolve_threads
    from tasks.dataset.hash_cache import HashCache
    from tasks.dataset.manifest import read_manifest
    from tasks.extraction.engines import OrtEngine, TorchEngine
    from tasks.extraction.extract import extract_to_store
    from tasks.extraction.feature_store import FeatureStore
    from tasks.modality.registry import modality_for

    threads = resolve_threads(args.threads)
    overrides = [f"backbone.max_length={args.max_length}" if text else f"backbone.input_size={args.size}",
                 f"features.batch_size={args.batch}"]
    if args.decode_workers is not None:
        overrides.append(f"features.decode_workers={args.decode_workers}")
    classes = 5 if text else 7
    paths = scratch_project(args.workdir / "project", args.data, per_class=math.ceil(args.images / classes) + 5,
                            overrides=overrides)
    params = stage_params(paths)
    run_stage("ingest", params, paths)
    manifest = read_manifest(paths)
    modality = modality_for(params.backbone)
    keys = manifest["sha256"].drop_duplicates().head(args.images).tolist()
    todo = modality.sources(manifest, keys, paths.root)
    hashes = HashCache(paths.hashes)

    images = modality.decode_batch(todo, params, hashes)  # warm file cache; then timed alone
    decode_s = time_once(lambda: modality.decode_batch(todo, params, hashes))
    batches = [images[i : i + args.batch] for i in range(0, len(images), args.batch)]
    common = {"data": args.data, "backbone": params.backbone.name, "samples": len(todo),
              "extent": modality.input_extent(params.backbone), "batch": args.batch, "threads": threads,
              "decode_workers": params.features.decode_workers, "quick": args.quick}
    emit(QUESTION, row="decode only (features stage decoder, 1 thread)",
         decode_per_s=round(len(todo) / decode_s, 1), **common)

    model = modality.build_model(params)[0]
    counter = itertools.count()
    with tempfile.TemporaryDirectory() as tmp:
        graph = modality.export_graph(model, Path(tmp) / "backbone.onnx", params, ["features"])
        if text:
            base, base_name = TorchEngine(model, threads, modality.torch_input(params)), "headstart's torch engine"
            engines = {}
        else:
            base, base_name = TorchNCHW(model, threads), "torch eager NCHW"
            engines = {"torch channels_last (headstart's torch engine)": TorchEngine(model, threads)}
        engines["ONNX Runtime (headstart's auto engine on CPU)"] = OrtEngine(graph, threads)

        def model_only(engine):
            return lambda: [engine.run(b) for b in batches]

        def end_to_end(engine):
            def go():  # a fresh store each run: every image decoded, run and written
                store = FeatureStore(Path(tmp) / "stores", f"e2e-{next(counter)}")
                extract_to_store(params, store, todo, engine, hashes)
            return go

        for name, engine in engines.items():
            m = paired(model_only(base), model_only(engine), reps=args.reps)
            e = paired(end_to_end(base), end_to_end(engine), reps=args.reps)
            n = len(todo)
            emit(QUESTION, row=name, baseline=base_name,
                 baseline_model_per_s=round(n / m.baseline_s, 1), model_per_s=round(n / m.candidate_s, 1),
                 model_x_baseline=round(m.speedup, 2),
                 baseline_e2e_per_s=round(n / e.baseline_s, 1), e2e_per_s=round(n / e.candidate_s, 1),
                 e2e_x_baseline=round(e.speedup, 2), e2e_over_model=round(m.candidate_s / e.candidate_s, 2),
                 reps=args.reps, **common)


if __name__ == "__main__":
    main()
