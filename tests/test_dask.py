"""Feature extraction sharded over 2-worker Dask LocalClusters on loopback (prefect-dask) equals the single-process
features stage, is incremental like it, and resumes from the part stores of an interrupted run."""

from __future__ import annotations

import hashlib
import shutil
import time

import numpy as np
import pandas as pd
import pytest

from flows.distributed import ADDRESS_ENV, extract_features_distributed
from tasks.core.errors import UserError
from tasks.extraction.feature_store import FeatureStore, open_store
from tasks.extraction.part_stores import split_chunks
from tasks.features import run_features
from tasks.ingest import run_ingest
from tests.conftest import make_project, project_params

# small shards so both the workers' part stores and the merge write several shard files
OVERRIDES = ["features.shard_size=40"]


def test_chunks_are_contiguous_and_cut_on_batch_boundaries():
    todo = list(range(150))
    chunks = split_chunks(todo, 2, 32)
    assert [len(c) for c in chunks] == [64, 86] and sum(chunks, []) == todo
    assert [len(c) for c in split_chunks(todo[:10], 2, 32)] == [10]  # one batch: one chunk
    assert split_chunks([], 2, 32) == []
    assert sum(split_chunks(todo, 3, 7), []) == todo and len(split_chunks(todo, 3, 7)) == 3


def _loopback_cluster():
    from distributed import LocalCluster

    return LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", scheduler_port=0,
                        dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})


@pytest.mark.slow
def test_sharded_extraction_on_a_local_dask_cluster_equals_the_single_process_stage(tmp_path, clipart_raw,
                                                                                      prefect_harness, monkeypatch):
    src = tmp_path / "src"
    for c in ("animals", "tools", "plants"):
        shutil.copytree(clipart_raw / c, src / c)

    # reference: the single-process features stage on every image
    single = make_project(tmp_path / "single", src, OVERRIDES)
    run_ingest(project_params(single), single)
    ref = run_features(project_params(single), single)
    ref_store = open_store(project_params(single), single)

    # the distributed project starts without 10 of the images
    paths = make_project(tmp_path / "dask", src, OVERRIDES)
    params = project_params(paths)
    late = sorted((paths.raw / "plants").rglob("*.png"))[-10:]
    parked = tmp_path / "parked"
    parked.mkdir()
    for f in late:
        shutil.move(f, parked / f.name)
    run_ingest(params, paths)
    keys = pd.read_parquet(paths.manifest)["sha256"].tolist()
    n_first = len(set(keys))

    # 1. a fresh store, the flow's own 2-worker LocalCluster
    t0 = time.perf_counter()
    first = extract_features_distributed(root=str(paths.root), shards=2)
    took = time.perf_counter() - t0
    assert first["extracted"] == n_first == ref.extracted - 10 and first["cache_hits"] == 0
    assert first["shards"] == 2 and len(first["workers"]) == 2  # really two worker processes
    assert len({t["pid"] for t in first["tasks"]}) == 2
    assert first["cluster"].startswith("tcp://127.0.0.1:")

    store = open_store(params, paths)
    assert store.fingerprint == ref.fingerprint
    got, want = store.get(keys), ref_store.get(keys)
    assert got.shape == want.shape == (len(keys), 1280)
    diff = float(np.abs(got - want).max())
    print(f"\ndistributed vs single-process: max |diff| = {diff:.3g}, bitwise equal: {np.array_equal(got, want)}; "
          f"first distributed run {took:.1f}s, tasks {[(t['samples'], t['seconds']) for t in first['tasks']]}")
    assert np.array_equal(got, want)  # bitwise, as the README says: same engine, same batches, same graph
    assert not list(store.dir.glob(".part-*")) and not list(store.dir.glob(".shard-*"))
    assert len(list(store.dir.glob("shard-*.keys.json"))) == -(-n_first // 40)  # re-cut to features.shard_size

    # 2. nothing new: all cache hits, no cluster started
    again = extract_features_distributed(root=str(paths.root), shards=2)
    assert again["extracted"] == 0 and again["cache_hits"] == n_first and again["shards"] == 0

    # 3. ten new images; five of them are already in a part store left by an interrupted run (merged, not
    # re-extracted), the other five run on an existing cluster named by $HEADSTART_DASK_ADDRESS
    for f in parked.iterdir():
        shutil.copy(f, paths.raw / "plants" / f.name)
    run_ingest(params, paths)
    late_keys = [hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(parked.iterdir())]
    FeatureStore(store.dir, ".part-3").append(late_keys[:5], ref_store.get(late_keys[:5]))
    with _loopback_cluster() as cluster, monkeypatch.context() as env:
        env.setenv(ADDRESS_ENV, cluster.scheduler_address)
        third = extract_features_distributed(root=str(paths.root), shards=2)
        assert third["cluster"] == cluster.scheduler_address
    assert third["salvaged"] == 5 and third["extracted"] == 5 and third["cache_hits"] == n_first + 5
    assert third["shards"] == 1  # five images are one batch: one chunk
    all_keys = pd.read_parquet(paths.manifest)["sha256"].tolist()
    assert len(set(all_keys)) == ref.samples
    got_all, want_all = open_store(params, paths).get(all_keys), ref_store.get(all_keys)
    print(f"after the incremental run: max |diff| = {float(np.abs(got_all - want_all).max()):.3g}, "
          f"bitwise equal: {np.array_equal(got_all, want_all)}")
    assert np.array_equal(got_all, want_all)
    assert not list(store.dir.glob(".part-*"))

    # 4. the flow holds the writer lock: a concurrent writer is refused, not interleaved
    lock = store.lock()
    lock.acquire()
    try:
        with pytest.raises(UserError, match="is being written by another run"):
            extract_features_distributed(root=str(paths.root), shards=2)
    finally:
        lock.release()
