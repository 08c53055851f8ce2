"""Does the head stage's memory stay flat, and its wall linear, as the feature store grows from 70k to 1M rows?
(issue 24; RESULTS.md section 24)

The source is `bench.head_at_scale_fmnist`'s cached Fashion-MNIST project (70,000 images at 64 px, EfficientNet-Lite0
features; built first if missing). A scratch project under `<workdir>/project` gets the source's feature store (its
shard files hard-linked, no copy) and its manifest; the store is then grown to each size in `--rows` by writing new
shards of the source's train rows plus Gaussian noise (`--noise` x each feature's standard deviation, seeded), one
`features.shard_size` shard at a time through `FeatureStore.append` with new keys (sha256 of the source key and the
copy number), never holding more than one shard of new rows; the manifest names them as train rows with their source
row's label (val and test stay the source's 6k and 10k). At each size, the head stage with head.C fixed runs as
dvc.yaml runs it (`python -m tasks.head -S head.C=0.1` in the project, a fresh process): its wall, its peak RSS (the
process's own ru_maxrss, from wait4) and head.json's fit record (iterations, passes, fit seconds), plus a fresh process
of this bench (`--child setup`) that only opens what the stage opens (`tasks.head.split_feature_rows`: the split's
keys and labels, the feature-store index as sorted arrays, the split's FeatureRows) and reports the RSS and the peak
after each, to say where memory that grows with N lives.

Targets (issue 24): peak RSS at every size <= 1.1x the 70k figure; wall per train row <= 1.1x the 70k figure.
1M rows x 1280 float32 is ~5 GB on disk: the free space is checked first and the sizes are capped at what fits with
`--reserve-gb` to spare (said in the rows). The store was just written, so the head reads it from the page cache
(the machine has 24 GB), not from the disk. The grown project is deleted at the end unless `--keep`.

`--max-iter K` caps the solver at K iterations at every size (head.max_iter): the same work per row at each size, so
the per-row cost and the RSS can be measured at 1M without a converged fit's hundreds of passes over 5 GB; the fit
record then says it stopped unconverged, and the rows carry passes and seconds per pass for projecting a full fit.

Run:  python -m bench.head_memory_vs_rows            (options: --rows 70000 300000 1000000, --C 0.1, --max-iter K,
      --noise 0.1, --reserve-gb 5, --keep, --workdir bench/out/head_memory_vs_rows; --quick: 5 % of Fashion-MNIST
      grown to 4x and 14x, checks the code path)
Benchmarks report, they do not gate: the exit status is 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from bench._harness import OUT, emit, reply, scratch_project, stage_params
from bench.head_at_scale_fmnist import OVERRIDES, cached_project, features_wall, head_code, project_child, stage_process

QUESTION = "Does the head stage's memory stay flat, and its wall linear, from 70k to 1M feature rows?"
RSS_TARGET, PER_ROW_TARGET = 1.1, 1.1


def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def setup_rss(root: Path) -> dict:
    """In this fresh process: the RSS after each thing the head stage opens before it fits (MiB), step by step as
    `tasks.head.split_feature_rows` does it for the train split: the split's keys and labels (pyarrow, column by
    column), the feature store and its index as sorted arrays (`key_table`, what `locate` builds), the FeatureRows.
    Each step's peak (VmHWM) too: the index is built from every shard's keys file, which can cost more while it is
    built than once it is held."""
    import tasks.head  # noqa: F401  (the stage's imports)
    from tasks.core.paths import ProjectPaths
    from tasks.dataset.manifest import split_keys_and_labels
    from tasks.extraction.feature_store import open_store
    from tasks.training.feature_rows import CHUNK_BYTES, FeatureRows

    paths = ProjectPaths(root)
    params = stage_params(paths)
    out = {}

    def probe(name: str) -> None:
        out[f"{name}_mb"], out[f"{name}_peak_mb"] = _vm("VmRSS"), _vm("VmHWM")

    probe("imports")
    keys, labels = split_keys_and_labels(paths, "train")
    probe("manifest")
    store = open_store(params, paths)
    store.check_recipe(params)
    table = store.key_table()
    n_store = len(table[0])
    probe("store_index")
    del table  # locate builds it again, and drops it, inside from_store
    rows = FeatureRows.from_store(store, keys, CHUNK_BYTES, 0)
    probe("feature_rows")
    return {"probe": "split_keys_and_labels + key_table", "n_store": n_store, "n_train": rows.n,
            "shards": len(rows.shards), "keys_bytes": keys.nbytes, "labels": len(labels),
            **{k: round(v, 1) for k, v in out.items()}, "peak_mb": round(_vm("VmHWM"), 1)}


def link_store(source, dest) -> tuple:
    """The dest project's feature store holding the source's shards (hard links) and its manifest (a copy)."""
    from tasks.extraction.feature_store import FeatureStore, open_store

    src_params, dst_params = stage_params(source), stage_params(dest)
    src = open_store(src_params, source)
    fp = open_store(dst_params, dest).fingerprint
    if fp != src.fingerprint:
        raise SystemExit(f"{dest.root}: feature fingerprint {fp} differs from the source's {src.fingerprint}")
    target = dest.features / fp
    for f in src.dir.iterdir():
        if f.is_file() and not (target / f.name).exists():
            os.link(f, target / f.name)
    dest.manifest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source.manifest, dest.manifest)
    return FeatureStore(dest.features, fp), dst_params


class Grower:
    """Appends noisy copies of the source's train rows to `store`, shard by shard, and remembers their manifest rows."""

    def __init__(self, store, manifest, noise: float, shard_size: int, seed: int = 0):
        import numpy as np

        from tasks.training.feature_rows import FeatureRows
        from tasks.training.moments import chunk_moments

        self.np, self.store, self.shard_size = np, store, shard_size
        self.base = manifest
        train = manifest[manifest["split"] == "train"]
        self.train = train.reset_index(drop=True)
        rows = FeatureRows.from_store(store, self.train["sha256"].tolist())
        self.sigma = (noise * chunk_moments(rows.chunks()).std()).astype(np.float32)
        self.sids, self.rows = store.locate(self.train["sha256"].tolist())
        self.rng = np.random.default_rng(seed)
        self.copy, self.next = 1, 0  # the copy being written, and the next train row of it
        self.new: list[tuple] = []  # (path, label, sha256, width, height) of every row written
        self.bytes_written = 0

    def grow_to(self, n_new: int) -> None:
        """Write shards until `n_new` noisy rows exist (the last shard may be short)."""
        np = self.np
        while len(self.new) < n_new:
            take = min(self.shard_size, n_new - len(self.new), len(self.train) - self.next)
            part = self.train.iloc[self.next:self.next + take]
            sids, rows = self.sids[self.next:self.next + take], self.rows[self.next:self.next + take]
            x = np.empty((take, len(self.sigma)), np.float32)
            for sid in np.unique(sids):
                mine = np.flatnonzero(sids == sid)
                x[mine] = np.load(self.store.shard_file(int(sid)), mmap_mode="r")[rows[mine]]
            x += self.rng.standard_normal(x.shape, dtype=np.float32) * self.sigma
            keys = [hashlib.sha256(f"{k}/{self.copy}".encode()).hexdigest() for k in part["sha256"]]
            self.store.append(keys, x, {"synthetic": f"bench.head_memory_vs_rows: copy {self.copy} of the train "
                                                     f"rows plus Gaussian noise"})
            self.bytes_written += x.nbytes
            self.new.extend(zip([f"synthetic/{self.copy}/{p}" for p in part["path"]], part["label"], keys,
                                part["width"], part["height"]))
            self.next += take
            if self.next == len(self.train):
                self.copy, self.next = self.copy + 1, 0

    def manifest(self):
        """The source's manifest plus every written row, as train rows."""
        import pandas as pd

        path, label, sha, width, height = (list(c) for c in zip(*self.new)) if self.new else ([],) * 5
        extra = pd.DataFrame({"path": path, "label": label, "split": "train", "sha256": sha, "width": width,
                              "height": height, "group": path, "text": None})
        return pd.concat([self.base, extra[self.base.columns]], ignore_index=True)


def capped_sizes(sizes: list[int], n0: int, dim: int, where: Path, reserve_gb: float) -> tuple[list[int], dict]:
    """The sizes that fit on the disk holding `where` with `reserve_gb` to spare (a larger size is capped)."""
    free = shutil.disk_usage(where).free
    per_row = dim * 4 + 100  # the row, and its key in the keys file
    room = max(0, int((free - reserve_gb * 1e9) // per_row))
    largest = n0 + room
    capped = sorted({min(s, largest) for s in sizes})
    return capped, {"disk_free_gb": round(free / 1e9, 1), "reserve_gb": reserve_gb, "largest_that_fits": largest,
                    "capped": capped != sorted(set(sizes))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.head_memory_vs_rows", description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[70_000, 300_000, 1_000_000],
                    help="store sizes (rows in the manifest; the first is the source's own size)")
    ap.add_argument("--C", default="0.1")
    ap.add_argument("--max-iter", type=int, default=None,
                    help="head.max_iter for every size (the same solver iterations at each size: a per-row cost "
                         "without the convergence path's differences; default: the project's, to convergence)")
    ap.add_argument("--noise", type=float, default=0.1, help="noise standard deviation, in each feature's std")
    ap.add_argument("--reserve-gb", type=float, default=5.0, help="disk space to leave free")
    ap.add_argument("--keep", action="store_true", help="keep the grown project")
    ap.add_argument("--workdir", type=Path, default=OUT / "head_memory_vs_rows")
    ap.add_argument("--source-workdir", type=Path, default=OUT / "head_at_scale_fmnist",
                    help="where bench.head_at_scale_fmnist keeps its cached project")
    ap.add_argument("--quick", action="store_true", help="5 %% of Fashion-MNIST grown to 4x and 14x")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        reply(setup_rss(Path(args.child[1])))
        return 0
    fraction = 0.05 if args.quick else 1.0
    source, _ = cached_project(args.source_workdir, fraction)
    features_wall(source)  # extracts when the cache is new; a no-op otherwise
    from tasks.dataset.manifest import read_manifest

    n0 = len(read_manifest(source))
    sizes = [n0, 4 * n0, 14 * n0] if args.quick else args.rows
    if sizes[0] != n0:
        sizes = [n0, *sizes]
    dest = scratch_project(args.workdir.resolve() / "project", None, overrides=OVERRIDES)
    store, params = link_store(source, dest)
    sizes, disk = capped_sizes(sizes, n0, store_dim(store), args.workdir, args.reserve_gb)
    code = head_code(dest.root)
    emit(QUESTION, what="disk", sizes=sizes, quick=args.quick, **disk, **code)
    grower = Grower(store, read_manifest(dest), args.noise, params.features.shard_size, params.seed)
    results = []
    try:
        for n in sizes:
            t0 = time.perf_counter()
            grower.grow_to(n - n0)
            manifest = grower.manifest()
            manifest.to_parquet(dest.manifest, index=False)
            grow_s = time.perf_counter() - t0
            del manifest
            overrides = [f"head.C={args.C}"] + ([f"head.max_iter={args.max_iter}"] if args.max_iter else [])
            r = stage_process("head", dest.root, overrides, log=dest.root / "logs" / f"head-{n}.log")
            record = json.loads(dest.models.joinpath("head.json").read_text())
            fit = record.get("fit") or {}
            setup = project_child(__spec__.name, "setup", dest.root)
            n_train, passes = record["n_train"], fit.get("passes") or 0
            row = {"rows": n, "n_train": n_train, "head_s": r["seconds"], "peak_rss_mb": r["peak_rss_mb"],
                   "cpu_s": r["cpu_s"], "load_avg_1min_after": r["load_avg_1min_after"],
                   "fit_s": round(fit.get("seconds", float("nan")), 2), "iterations": fit.get("iterations"),
                   "passes": passes, "converged": fit.get("converged"), "grad_norm": fit.get("grad_norm"),
                   "us_per_train_row": round(1e6 * r["seconds"] / n_train, 2),
                   "fit_s_per_pass": round(fit.get("seconds", 0) / passes, 3) if passes else None,
                   "fit_us_per_row_pass": round(1e6 * fit.get("seconds", 0) / (n_train * passes), 4) if passes else None,
                   "train_accuracy": round(record["train_accuracy"], 4),
                   "val_accuracy": round(record["val_accuracy"], 4), "setup_rss": setup,
                   "store_gb": round((n * store_dim(store)) * 4 / 1e9, 2), "grow_s": round(grow_s, 1)}
            results.append(row)
            emit(QUESTION, what="head at size", C=args.C, max_iter=args.max_iter, noise=args.noise, quick=args.quick,
                 **row, **code)
    finally:
        if not args.keep:
            shutil.rmtree(dest.root, ignore_errors=True)
    base = results[0]
    for r in results[1:]:
        emit(QUESTION, what="vs first size", rows=[base["rows"], r["rows"]], quick=args.quick,
             rss_ratio=round(r["peak_rss_mb"] / base["peak_rss_mb"], 3), rss_target=RSS_TARGET,
             per_row_ratio=round(r["us_per_train_row"] / base["us_per_train_row"], 3),
             per_row_pass_ratio=(round(r["fit_us_per_row_pass"] / base["fit_us_per_row_pass"], 3)
                                 if r["fit_us_per_row_pass"] and base["fit_us_per_row_pass"] else None),
             per_row_target=PER_ROW_TARGET, passes=[base["passes"], r["passes"]],
             met={"rss": r["peak_rss_mb"] / base["peak_rss_mb"] <= RSS_TARGET,
                  "per_row": r["us_per_train_row"] / base["us_per_train_row"] <= PER_ROW_TARGET},
             kept=str(dest.root) if args.keep else None, **disk)
    return 0


def store_dim(store) -> int:
    """The feature width of `store` (from its first shard's header)."""
    from tasks.training.feature_rows import shard_header

    first = sorted(store.dir.glob("shard-*.npy"))[0]
    return shard_header(first)[1]



if __name__ == "__main__":
    sys.exit(main())
