"""Benchmark 8: fine-tune step throughput with headstart's input pipeline and thread settings vs torch defaults.

Run from the project root (needs the clip-art demo data, i.e. after `bash scripts/demo.sh`, or any ImageFolder):

    .venv/bin/python bench/finetune_threads.py                         # 96 px, batch 32, 12 timed steps per setting
    .venv/bin/python bench/finetune_threads.py --size 224 --steps 6    # the demo's resolution

Every setting trains the same model (Lite0 + linear head, `last_n` 3 units, AdamW) on the same real images with the
same augmentation (random resized crop, flip, colour jitter); only the input pipeline and threads differ:

- `torch defaults`: what a typical recipe does: a DataLoader whose Dataset decodes, resizes and augments each image
  file, `num_workers=2`, torch's default intra-op threads (one per core) in the trainer process;
- `defaults, workers=0`: the same without worker processes;
- `headstart`: the fine-tune stage's pipeline: pixels decoded once into the memory-mapped cache
  (tasks.dataset.pixel_cache), augmentation on uint8 tensors in the trainer, no worker processes, `finetune.threads`
  (0 = one per core), channels_last;
- `headstart, 1 thread`: the same with one thread.

Printed: images/s per setting (median of 3 repeats of `--steps` steps after 2 warm-up steps), and each one's ratio to
`torch defaults`. Benchmarks report, they do not gate: the exit status is 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from tasks.core.errors import UserError, exit_on_user_error
from tasks.core.params import AugmentParams, BackboneParams, FinetuneParams
from tasks.dataset.images import load_uint8
from tasks.model.backbones import build_backbone
from tasks.model.image_model import ImageModel
from tasks.model.batches import make_augment
from tasks.model.units import backbone_units
from tasks.training.freezing import apply_depth, param_groups, set_train_modes

ROOT = Path(__file__).resolve().parents[1]


def _augment(size: int):
    return make_augment(AugmentParams(), size)  # the stage's default augmentation


class FileDataset(torch.utils.data.Dataset):
    """The usual recipe: decode + resize + augment one file per item."""

    def __init__(self, files, labels, size):
        self.files, self.labels, self.size, self.aug = files, labels, size, _augment(size)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        img = torch.from_numpy(load_uint8(self.files[i], self.size, "pad")).permute(2, 0, 1)
        return self.aug(img).permute(1, 2, 0), self.labels[i]


def _model(size: int, classes: int, channels_last: bool):
    p = FinetuneParams(strategy="last_n", last_n=3)
    loaded = build_backbone(BackboneParams(input_size=size))
    from tasks.model.head_format import Head
    from tasks.model.torch_head import HeadModule, fresh_layers

    h = Head(fresh_layers([(loaded.feature_dim, classes)], seed=0), [str(i) for i in range(classes)], "")
    model = ImageModel(loaded.model, loaded.spec.mean, loaded.spec.std, head=HeadModule(h))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    units = backbone_units(loaded.model, loaded.blocks)
    apply_depth(units, 3)
    set_train_modes(model, units, 3, "eval")
    opt = torch.optim.AdamW(param_groups(model.head, units, p))
    return model, opt


def _step(model, opt, xb, yb):
    loss = torch.nn.functional.cross_entropy(model(xb)[0], yb, label_smoothing=0.1)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _timed(batches, model, opt, steps: int, batch: int) -> float:
    it = iter(batches)
    for _ in range(2):
        _step(model, opt, *next(it))
    t0 = time.perf_counter()
    for _ in range(steps):
        _step(model, opt, *next(it))
    return steps * batch / (time.perf_counter() - t0)


def run(files, labels, size: int, batch: int, steps: int, repeats: int) -> dict:
    n_needed = (steps + 2) * batch
    reps = -(-n_needed // len(files))
    files, labels = (files * reps)[:n_needed], (labels * reps)[:n_needed]
    default_threads = torch.get_num_threads()
    cache = np.stack([load_uint8(f, size, "pad") for f in files])  # the stage's pixel cache (decoded once, untimed)
    y_all = torch.as_tensor(labels)
    aug = _augment(size)

    def cached_batches():
        torch.manual_seed(0)
        for s in range(0, n_needed, batch):
            px = torch.from_numpy(cache[s : s + batch]).permute(0, 3, 1, 2)
            yield torch.stack([aug(img) for img in px]).permute(0, 2, 3, 1), y_all[s : s + batch]

    settings = {
        "torch defaults (file DataLoader, 2 workers)": ("files", 2, default_threads, False),
        "defaults, workers=0": ("files", 0, default_threads, False),
        "headstart (pixel cache, no workers, threads=cores, channels_last)": ("cache", 0, default_threads, True),
        "headstart, 1 thread": ("cache", 0, 1, True),
    }
    out = {}
    for name, (source, workers, threads, cl) in settings.items():
        torch.set_num_threads(threads)
        rates = []
        for _ in range(repeats):
            torch.manual_seed(0)
            model, opt = _model(size, max(labels) + 1, cl)
            if source == "files":
                batches = torch.utils.data.DataLoader(FileDataset(files, labels, size), batch_size=batch,
                                                      num_workers=workers, persistent_workers=False)
            else:
                batches = cached_batches()
            rates.append(_timed(batches, model, opt, steps, batch))
        out[name] = {"img_s": statistics.median(rates), "runs": rates, "threads": threads, "workers": workers}
        print(f"{name:68s} {out[name]['img_s']:6.1f} img/s", flush=True)
    torch.set_num_threads(default_threads)
    base = out["torch defaults (file DataLoader, 2 workers)"]["img_s"]
    for r in out.values():
        r["ratio_vs_defaults"] = r["img_s"] / base
    return out


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "raw", help="ImageFolder root (default: demo data)")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args(argv)
    classes = sorted(d.name for d in args.data.iterdir() if d.is_dir()) if args.data.is_dir() else []
    if not classes:
        raise UserError(f"{args.data}: no class folders; run `bash scripts/demo.sh` first or pass --data")
    files, labels = [], []
    for i, c in enumerate(classes):
        for f in sorted((args.data / c).rglob("*.png"))[:40]:
            files.append(f)
            labels.append(i)
    result = run(files, labels, args.size, args.batch, args.steps, args.repeats)
    print("\nratio vs torch defaults:")
    for name, r in result.items():
        print(f"  {name:68s} {r['ratio_vs_defaults']:.2f}x")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
