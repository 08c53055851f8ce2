"""Is the fine-tune stage's input pipeline faster than torch's usual recipe? Step throughput, same model and images.
(RESULTS.md section 9)

Run from the repository root:

    python -m bench.finetune_input_pipeline_speed                         # 96 px, batch 32, 12 timed steps
    python -m bench.finetune_input_pipeline_speed --size 224 --steps 6    # the demo's resolution
    python -m bench.finetune_input_pipeline_speed --quick                 # 64 px, batch 16, 3 steps, 1 repeat

A scratch project with the clip-art demo data (--per-class images of each class) runs ingest, features and head;
then every setting trains the same model with the fine-tune stage's own preparation
(`tasks.training.finetune_run.prepare`: Lite0 + the probe head, `last_n` 3 units, AdamW with the stage's param
groups) on the same training images; only the input pipeline and threads differ:

- `torch defaults` (the baseline, a recipe of this bench, not headstart's code): a DataLoader whose Dataset
  decodes, resizes and augments each image file (the stage's augmentation), `num_workers=2`, torch's default
  intra-op threads, contiguous memory format;
- `defaults, workers=0`: the same without worker processes;
- `headstart`: the stage's own pipeline and step (`prepare` + `tasks.training.epoch.train_pass`): pixels decoded
  once into the memory-mapped cache, augmentation on uint8 tensors in the trainer, no worker processes,
  `finetune.threads` 0 (one per core), channels_last;
- `headstart, 1 thread`: the same with `finetune.threads=1`.

One JSON row per setting: images/s (median of --repeats runs of --steps steps after 2 warm-up steps) and the ratio to
`torch defaults`. Benchmarks report, they do not gate: the exit status is 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bench._harness import OUT, emit, run_stage, scratch_project, stage_params
from tasks.core.errors import exit_on_user_error

QUESTION = "Is the fine-tune stage's input pipeline faster than torch's usual recipe?"


def _file_dataset(files: list[str], labels: list[int], size: int, augment):
    import torch

    from tasks.dataset.images import load_uint8

    class FileDataset(torch.utils.data.Dataset):
        """The usual recipe: decode + resize + augment one file per item."""

        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            img = torch.from_numpy(load_uint8(files[i], size, "pad")).permute(2, 0, 1)
            return augment(img).permute(1, 2, 0), labels[i]

    return FileDataset()


def _prepared(params, paths, depth: int):
    """The fine-tune stage's run object (model, optimizer, pixel cache, batch maker) with `depth` units training."""
    from tasks.training.finetune_run import prepare
    from tasks.training.freezing import apply_depth, set_train_modes

    run = prepare(params, paths)
    apply_depth(run.units, depth)
    set_train_modes(run.model, run.units, depth, params.finetune.bn)
    return run


def _files_rate(params, paths, n_needed: int, batch: int, steps: int, workers: int, threads: int) -> float:
    """img/s of `steps` steps fed by the file DataLoader (after 2 warm-up steps), torch's defaults."""
    import torch
    import torch.nn.functional as F

    from tasks.dataset.manifest import read_manifest, split_rows
    from tasks.model.batches import make_augment

    run = _prepared(params, paths, params.finetune.last_n)
    torch.set_num_threads(threads)
    model = run.model.to(memory_format=torch.contiguous_format)
    rows = split_rows(read_manifest(paths), "train")
    reps = -(-n_needed // len(rows))
    files = [str(paths.root / p) for p in rows["path"]] * reps
    labels = run.y_train.tolist() * reps
    aug = make_augment(params.finetune.augment, params.backbone.input_size)
    loader = torch.utils.data.DataLoader(_file_dataset(files[:n_needed], labels[:n_needed],
                                                       params.backbone.input_size, aug),
                                         batch_size=batch, num_workers=workers, persistent_workers=False)

    def step(xb, yb):
        loss = F.cross_entropy(model(xb)[0], yb, label_smoothing=params.finetune.label_smoothing)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()

    it = iter(loader)
    for _ in range(2):
        step(*next(it))
    t0 = time.perf_counter()
    for _ in range(steps):
        step(*next(it))
    return steps * batch / (time.perf_counter() - t0)


def _stage_rate(params, paths, n_needed: int, batch: int, steps: int) -> float:
    """img/s of `steps` steps of the fine-tune stage's own train pass (after 2 warm-up steps)."""
    import torch

    from tasks.training.epoch import train_pass

    run = _prepared(params, paths, params.finetune.last_n)
    n = len(run.y_train)
    order = torch.arange(n_needed) % n

    def go(part):
        train_pass(run.forward, run.opt, run.sched, run.scaler, run.x_train, run.y_train, part, params.finetune,
                   run.make_batch, run.device, run.autocast, "bench")

    go(order[: 2 * batch])
    t0 = time.perf_counter()
    go(order[2 * batch : (steps + 2) * batch])
    return steps * batch / (time.perf_counter() - t0)


def run(paths, size: int, batch: int, steps: int, repeats: int, quick: bool) -> dict:
    import torch

    default_threads = torch.get_num_threads()
    n_needed = (steps + 2) * batch
    base = ["finetune.strategy=last_n", "finetune.last_n=3", f"finetune.batch_size={batch}"]
    settings = {
        "torch defaults (file DataLoader, 2 workers)": ("files", 2, default_threads),
        "defaults, workers=0": ("files", 0, default_threads),
        "headstart (pixel cache, no workers, threads=cores, channels_last)": ("cache", 0, 0),
        "headstart, 1 thread": ("cache", 0, 1),
    }
    out = {}
    for name, (source, workers, threads) in settings.items():
        params = stage_params(paths, base + [f"finetune.threads={threads if source == 'cache' else 0}"])
        rates = []
        for _ in range(repeats):
            torch.manual_seed(0)
            if source == "files":
                rates.append(_files_rate(params, paths, n_needed, batch, steps, workers, threads))
            else:
                rates.append(_stage_rate(params, paths, n_needed, batch, steps))
        out[name] = {"img_s": statistics.median(rates), "runs": [round(r, 2) for r in rates],
                     "threads": threads or default_threads, "workers": workers}
    torch.set_num_threads(default_threads)
    train_images = _train_images(paths)
    baseline = out["torch defaults (file DataLoader, 2 workers)"]["img_s"]
    for name, r in out.items():
        emit(QUESTION, setting=name, img_s=round(r["img_s"], 1), ratio_vs_defaults=round(r["img_s"] / baseline, 2),
             runs=r["runs"], threads=r["threads"], workers=r["workers"], size=size, batch=batch, steps=steps,
             repeats=repeats, train_images=train_images, quick=quick)
    return out


def _train_images(paths) -> int:
    """Training images in the scratch project's manifest."""
    from tasks.dataset.manifest import read_manifest, split_rows

    return len(split_rows(read_manifest(paths), "train"))


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=40, help="clip-art images per class in the scratch project")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=OUT / "finetune_input_pipeline_speed")
    ap.add_argument("--quick", action="store_true", help="10 images per class, 64 px, batch 16, 3 steps, 1 repeat")
    args = ap.parse_args(argv)
    if args.quick:
        args.per_class, args.size, args.batch, args.steps, args.repeats = 10, 64, 16, 3, 1
    paths = scratch_project(args.workdir / "project", "clipart", per_class=args.per_class,
                            overrides=[f"backbone.input_size={args.size}"])
    params = stage_params(paths)
    for name in ("ingest", "features", "head"):
        run_stage(name, params, paths)
    run(paths, args.size, args.batch, args.steps, args.repeats, args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
