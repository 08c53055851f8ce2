"""Feature extraction sharded over a Dask cluster (prefect-dask's `DaskTaskRunner`): the features stage, scaled out.

`extract_features_distributed` leaves the feature store exactly as `tasks.features.run_features` would (same keys,
same rows; only the split into shard files may differ), but runs the extraction as one Prefect task per contiguous
chunk of the missing images, each on a Dask worker. Design, and why:

- **The coordinator (this flow) owns the store.** It takes the store's writer lock (`tasks.extraction.feature_store.acquire`)
  for its whole run and is the only process that ever appends to the store. `FeatureStore.append` picks the next
  shard id from the files on disk, so two workers appending at once could pick the same id and overwrite each other;
  workers never take the lock (the coordinator holds it) and never write to the store.
- **Per-worker part stores.** Worker i writes its rows into a private sub-store `<store>/.part-<i>/` (an ordinary
  `FeatureStore`, so its shards are atomic too). When every worker is done, the coordinator — still holding the lock
  — reads the parts in chunk order and appends their rows to the main store as new shards (re-cut to
  `features.shard_size` rows, so a sharded run writes as few files as a single-process one), then deletes the parts.
  Parts left behind by an interrupted run hold only whole shards; the next run merges them first (they are keyed by
  sha256 under the same fingerprint, so they are valid) and extracts only what is still missing.
- **Chunks are contiguous and cut on `features.batch_size` boundaries**, so every image lands in the same batch as in
  a single-process run (the feature of an image does not depend on its batch-mates, but this removes the question).
  Fewer chunks than `shards` are run when there are fewer batches than shards; nothing at all when nothing is missing.
- **One core per task.** Each worker runs with `features.threads = 1` (and the LocalCluster with
  `threads_per_worker=1`), so N workers on N cores do not oversubscribe them: several multi-threaded workers on
  the same cores spend their time contending for them, not computing. On an external cluster, ask for as many
  shards as it has worker threads.
- **The ONNX backbone is exported once**, by the coordinator, into `<store>/backbone.onnx` before fanning out; the
  workers only load the cached graph (no torch import, no racing exports).
- **Loopback by default.** Without `address` (or `$HEADSTART_DASK_ADDRESS`) the flow starts a temporary
  `LocalCluster` of `shards` worker processes bound to 127.0.0.1 on free ports, with no dashboard, and shuts it down
  at the end. With an address, the workers must see the project (images and `data/features/`) at the same absolute
  paths, e.g. on a shared filesystem, and be able to import `tasks` and `flows` (this package installed).
- **One Prefect API for all.** When the run has no `PREFECT_API_URL` (Prefect's temporary local server, as in
  `headstart run`), the workers are given this run's server URL; otherwise each worker process would start a
  temporary server of its own (several seconds each) and record its task run there. That server is on 127.0.0.1, so a
  scheduler elsewhere needs `PREFECT_API_URL` set to a server its workers can reach (a one-line error says so).
- The fan-out calls `DaskTaskRunner.submit` inside the flow rather than setting the flow's `task_runner`, because the
  cluster address is a flow parameter; the task runs are still recorded under this flow run. Chunk lists go to the
  workers through Dask only (never to the Prefect API as flow parameters: they can be 100k paths long).

`python -m flows.distributed --shards 2 [--address tcp://host:8786]` runs it on the current directory.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import time
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from tasks.core.errors import UserError, exit_on_user_error
from tasks.core.params import PARAMS_FILE, Params, load_params
from tasks.core.paths import ProjectPaths, default_paths
from tasks.core.progress import log
from tasks.dataset.manifest import read_manifest
from tasks.extraction.backbone_graph import ensure_backbone_graph
from tasks.extraction.engines import resolve_engine
from tasks.extraction.feature_store import FeatureStore, acquire, open_store
from tasks.extraction.part_stores import extract_part, merge_parts, split_chunks
from tasks.modality.registry import modality_for
from tasks.modality.samples import parity_samples

ADDRESS_ENV = "HEADSTART_DASK_ADDRESS"


@task(name="extract-shard", retries=0, cache_policy=NO_CACHE)
def extract_shard(params: Params, features_root: str, fingerprint: str, index: int,
                  todo: list[tuple[str, str]], hashes: str) -> dict:
    """On a worker: extract `todo` [(sha256, absolute path)] into the part store `<store>/.part-<index>/`.

    Never takes the store lock and never writes the main store (the coordinator holds the lock and merges parts).
    """
    t0 = time.perf_counter()
    engine = extract_part(params, Path(features_root) / fingerprint, index, todo, Path(hashes))
    try:
        from distributed import get_worker

        worker = get_worker().address
    except (ImportError, ValueError):
        worker = "local"
    return {"index": index, "samples": len(todo), "engine": engine, "worker": worker, "pid": os.getpid(),
            "seconds": round(time.perf_counter() - t0, 3)}


def task_runner(shards: int, address: str | None = None):
    """A DaskTaskRunner: on `address` (else $HEADSTART_DASK_ADDRESS), else a temporary loopback LocalCluster of
    `shards` single-threaded worker processes with no dashboard."""
    from prefect_dask import DaskTaskRunner

    address = address or os.environ.get(ADDRESS_ENV) or None
    if address:
        return DaskTaskRunner(address=address)
    # dashboard_address=None only drops the dashboard pages: the scheduler's HTTP server (health, metrics) would
    # still bind the fixed port 8787, so it gets a free loopback port like everything else.
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs={
        "n_workers": shards, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1",
        "scheduler_port": 0, "dashboard_address": None, "worker_dashboard_address": None,
        "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
    })


_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _api_url_for_workers(address: str | None) -> str | None:
    """The Prefect API URL the workers must use, when this process runs on an ephemeral API (no PREFECT_API_URL).

    Without it every Dask worker would start a temporary Prefect server of its own (~15 s each, all on one SQLite
    file) and record its task run there. The ephemeral server listens on 127.0.0.1, so only workers on this machine
    can reach it: an external cluster elsewhere needs a real server.
    """
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None  # already set: the serialized settings carry it to the workers
    ctx = FlowRunContext.get()
    url = str(ctx.client.api_url).rstrip("/") if ctx and ctx.client else None
    if address and url:
        from urllib.parse import urlsplit

        host = urlsplit(address if "://" in address else f"tcp://{address}").hostname or ""
        if host not in _LOOPBACK:
            raise UserError(f"Dask scheduler {address} is not on this machine, but Prefect runs on a temporary local "
                            f"API its workers cannot reach: set PREFECT_API_URL to a Prefect server they can reach "
                            f"(e.g. `prefect server start --host <this machine's address on that private network>`; "
                            f"never a public interface: the API has no authentication)")
    return url


@contextlib.contextmanager
def _dask_context(address: str | None):
    """Point the workers at this run's Prefect API and keep Dask's INFO chatter (ports, nannies, retiring workers)
    out of the run's log: WARNING and above still show, here and in the LocalCluster's worker processes."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = _api_url_for_workers(address)
    dask_logger = logging.getLogger("distributed")
    old_level = dask_logger.level
    env_key = "DASK_LOGGING__DISTRIBUTED"  # read by distributed when a spawned worker process imports it
    set_env = env_key not in os.environ
    try:
        if set_env:
            os.environ[env_key] = "warning"
        if dask_logger.getEffectiveLevel() < logging.WARNING:
            dask_logger.setLevel(logging.WARNING)
        with temporary_settings(updates={PREFECT_API_URL: url}) if url else contextlib.nullcontext():
            yield
    finally:
        dask_logger.setLevel(old_level)
        if set_env:
            os.environ.pop(env_key, None)


def _ensure_onnx_backbone(params: Params, paths: ProjectPaths, store: FeatureStore) -> None:
    """Make (and check against torch) the store's backbone graph once, here, unless every worker will run torch."""
    if params.features.engine != "torch":
        ensure_backbone_graph(params, store, lambda: parity_samples(params, paths))


@flow(name="headstart-features-distributed", log_prints=True)
def extract_features_distributed(root: str | None = None, shards: int = 2, address: str | None = None) -> dict:
    """Ensure every manifest image of the project at `root` (default: the working directory) has a feature row,
    extracting the missing ones in `shards` parallel tasks on a Dask cluster. Returns a summary."""
    if shards < 1:
        raise UserError(f"shards must be >= 1 (got {shards})")
    t0 = time.perf_counter()
    address = address or os.environ.get(ADDRESS_ENV) or None
    paths = ProjectPaths(Path(root).resolve()) if root else default_paths()
    params = load_params(paths.root / PARAMS_FILE)
    manifest = read_manifest(paths)
    store = open_store(params, paths)
    lock = acquire(store)
    results: list[dict] = []
    cluster = None
    try:
        store.clean_orphans()
        salvaged, _ = merge_parts(store, params.features.shard_size)  # leftovers of an interrupted run
        todo = store.missing_samples(manifest, paths.root, modality_for(params.backbone))
        chunks = split_chunks(todo, shards, params.features.batch_size)
        files = 0
        if chunks:
            _ensure_onnx_backbone(params, paths, store)
            worker_params = params.model_copy(update={"features": params.features.model_copy(update={"threads": 1})})
            try:
                with _dask_context(address), task_runner(len(chunks), address) as runner:
                    futures = [runner.submit(extract_shard, parameters={
                        "params": worker_params, "features_root": str(paths.features),
                        "fingerprint": store.fingerprint, "index": i, "todo": chunk,
                        "hashes": str(paths.hashes)}) for i, chunk in enumerate(chunks)]
                    for f in futures:  # let every worker finish (and its part become whole) before merging
                        f.wait()
                    cluster = runner.client.scheduler.address
                    results = [f.result() for f in futures]  # raises the first worker failure
            finally:
                _, files = merge_parts(store, params.features.shard_size)  # whatever finished is kept
            still = store.missing([k for k, _ in todo])
            if still:  # every task succeeded, yet rows are missing: the workers wrote somewhere else
                raise UserError(f"{len(still)} image(s) extracted on the Dask workers never reached {store.dir}: do "
                                f"the workers see the project at the same path (a shared filesystem)?")
    finally:
        lock.release()
    seconds = time.perf_counter() - t0
    n_unique = int(manifest["sha256"].nunique())
    engine = results[0]["engine"] if results else resolve_engine(params.features.engine)
    summary = {
        "fingerprint": store.fingerprint, "store": str(store.dir), "engine": engine, "samples": n_unique,
        "cache_hits": n_unique - len(todo), "extracted": len(todo), "salvaged": salvaged, "shards": len(chunks),
        "shard_files": files, "workers": sorted({r["worker"] for r in results}), "cluster": cluster,
        "tasks": results, "seconds": round(seconds, 3),
        "samples_per_s": round(len(todo) / seconds, 1) if todo else 0.0,
    }
    log(f"features (distributed): {n_unique} samples, {summary['cache_hits']} cache hits, {len(todo)} extracted "
        f"in {len(chunks)} shard(s) on {len(summary['workers'])} worker(s) [{engine}] in {seconds:.1f}s "
        f"({summary['samples_per_s']:.1f}/s) -> {store.fingerprint}")
    return summary


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m flows.distributed",
                                 description="Extract missing features on a Dask cluster (one task per shard).")
    ap.add_argument("--shards", type=int, default=2, help="parallel extraction tasks (default 2)")
    ap.add_argument("--address", default=None,
                    help=f"Dask scheduler address (default ${ADDRESS_ENV}, else a temporary loopback LocalCluster)")
    ap.add_argument("--root", default=None, help="project directory (default: the working directory)")
    args = ap.parse_args(argv)
    if args.shards < 1:
        raise UserError(f"--shards must be >= 1 (got {args.shards})")
    root = Path(args.root).resolve() if args.root else default_paths().root
    load_params(root / PARAMS_FILE)  # fail fast, before Prefect starts, on a bad params file
    return extract_features_distributed(root=args.root, shards=args.shards, address=args.address)


if __name__ == "__main__":
    # Run the flow from its importable module, not from __main__, so Dask workers unpickle the task by reference.
    from flows.distributed import main as _main

    _main()
