"""Near-duplicates by embedding: a resized copy is found (stage audit) and kept in its twin's split (ingest)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from tasks.audit import run_audit
from tasks.data_quality.near_duplicates import cosine_pairs
from tasks.dataset.manifest import read_manifest
from tasks.features import run_features
from tasks.ingest import run_ingest


def test_cosine_pairs_finds_each_pair_once_most_similar_first():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.99, 0.05], [2.0, 0.0]], np.float32)
    i, j, cos = cosine_pairs(x, 0.98)
    assert list(zip(i, j)) == [(0, 3), (0, 2), (2, 3)] and cos[0] == 1.0 and np.all(np.diff(cos) <= 0)


def test_a_resized_copy_is_found_and_kept_in_its_twins_split(built_project, built_copy):
    _, params, _ = built_project
    proj = built_copy
    manifest = read_manifest(proj)
    twins = {}
    for path in manifest.loc[manifest["split"] == "test", "path"].head(6):  # copies of test images, new names
        src = proj.root / path
        copy = src.with_name(f"zz_resized_{src.stem.replace('_', '')}.png")
        with Image.open(src) as im:
            im.convert("RGBA").resize((max(8, im.width * 3 // 4), max(8, im.height * 3 // 4))).save(copy)
        twins[copy.relative_to(proj.root).as_posix()] = path
    run_ingest(params, proj)
    run_features(params, proj)
    split = dict(zip(*[read_manifest(proj)[c] for c in ("path", "split")]))
    assert any(split[c] != split[t] for c, t in twins.items())  # placed as new files, some away from their twin
    summary = run_audit(params, proj)
    pairs = pd.read_csv(proj.reports / "near_duplicates.csv")
    found = {frozenset(p) for p in zip(pairs["path_a"], pairs["path_b"])}
    assert all(frozenset((c, t)) in found for c, t in twins.items())  # every resized copy is found
    assert summary.cross_split_pairs >= 1
    run_ingest(params, proj)  # the guard reads the report: each copy joins its twin's split
    split = dict(zip(*[read_manifest(proj)[c] for c in ("path", "split")]))
    assert all(split[c] == split[t] for c, t in twins.items())
    assert run_audit(params, proj).cross_split_pairs == 0


def test_a_chain_of_look_alikes_is_not_joined_into_one_split():
    from tasks.dataset.splits import join_near_duplicates

    n = 20  # one class of look-alike samples: every neighbour pair above the threshold chains the whole class
    df = pd.DataFrame({"sha256": [f"s{i}" for i in range(n)], "label": ["a"] * n, "group": [f"g{i}" for i in range(n)],
                       "path": [f"a/{i}.png" for i in range(n)], "explicit_split": [None] * n})
    split = ["train"] * 14 + ["val"] * 3 + ["test"] * 3
    chain = [(f"s{i}", f"s{i + 1}") for i in range(n - 1)]
    assert join_near_duplicates(df, split, chain) == 0 and split.count("test") == 3  # left as they were
    assert join_near_duplicates(df, split, [("s0", "s19")]) == 1 and split[19] == "train"  # a real pair still joins
