"""Scoring the shipped classifier on cached features, where that is provably the same computation.

A classifier export composed for a frozen backbone (`tasks.model.head_graph`) is the feature store's backbone graph
followed by the head, and its metadata names that graph's sha256 and the store's fingerprint. When
- the store of that fingerprint still holds a graph with that sha256, and
- every shard holding the rows to score was computed by ONNX Runtime of the running version, with that very graph
  and the running decoder (each shard's provenance says so),
then the whole graph on the image files computes the backbone graph on the same pixels (the decoder is the same,
and so are the graph and the runtime), and so the same features as the cached rows: running the classifier's own
head sub-graph on those rows is the same computation, minus decoding and the backbone. An end-to-end check of the
whole graph from image files on a sample (`export.parity_images` rows) confirms it on every run, so decoder skew or
a stale row still shows; if the check disagrees, evaluate scores from image files instead and says why. The whole
graph's side of that check is export's own run of the shipped bytes on its parity samples
(models/metrics/export_parity.json, keyed by the model's sha256) when it is there and those samples' rows have the
same provenance; otherwise evaluate runs the whole graph on a sample of the split it scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.core.files import sha256_file
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths
from tasks.core.progress import log
from tasks.extraction.feature_store import FeatureStore
from tasks.runtime.onnx_classifier import OnnxClassifier


def why_not_cached(clf: OnnxClassifier, paths: ProjectPaths, keys: list[str]) -> tuple[FeatureStore | None, str]:
    """(the store to score from, "") when cached features provably give the classifier's answers for `keys`, else
    (None, the reason they do not)."""

    made = clf.metadata.get("headstart.backbone_graph")
    if not made:
        return None, "the model was not composed from a cached backbone graph (a fine-tuned backbone)"
    made = json.loads(made)
    store_dir = paths.features / made["fingerprint"]
    if not store_dir.is_dir():
        return None, f"its feature store {made['fingerprint']} is gone"
    store = FeatureStore(paths.features, made["fingerprint"])
    record = store.graph_record()
    if record is None or record["sha256"] != made["sha256"]:
        return None, f"the store's backbone graph is not the one in the model (sha256 {made['sha256'][:12]})"
    why = why_rows_differ(store, keys, made["sha256"], clf.modality)
    return (None, why) if why else (store, "")


def why_rows_differ(store: FeatureStore, keys: list[str], graph_sha256: str, modality) -> str:
    """"" when every cached row of `keys` was computed by ONNX Runtime of the running version with the graph of
    `graph_sha256` and the running decoder (so they are what that graph computes from the files today), else why not."""
    import onnxruntime

    missing = store.missing(keys)
    if missing:
        return f"{len(missing)} {modality.noun} have no cached features"
    wanted = {"engine": "onnxruntime", "engine_version": onnxruntime.__version__, "graph_sha256": graph_sha256,
              "decoder": modality.decoder()}
    for p in store.provenance_for(keys):
        differs = [k for k, v in wanted.items() if p.get(k) != v]
        if differs:
            return f"some cached rows were computed with another {differs[0]} ({p.get(differs[0])})"
    return ""


def exported_outputs(paths: ProjectPaths, clf: OnnxClassifier) -> tuple[list[str], np.ndarray] | None:
    """The whole graph's probabilities on export's parity samples (their sha256 keys, probabilities), as export
    recorded them for these very model bytes; None when there is no such record."""
    record_file = paths.metrics / "export_parity.json"
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError):
        return None
    if not record.get("keys") or record.get("model_sha256") != sha256_file(clf.path):
        return None
    return record["keys"], np.asarray(record["probs"], dtype=np.float32)


def _head_session(clf: OnnxClassifier):
    import onnx
    import onnxruntime

    from tasks.model.head_graph import head_subgraph

    sub = head_subgraph(onnx.load(str(clf.path)))
    return onnxruntime.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"])


def score_cached(params: Params, paths: ProjectPaths, clf: OnnxClassifier,
                 rows: pd.DataFrame) -> tuple[np.ndarray, dict] | None:
    """The classifier's probabilities for `rows` from its head sub-graph on cached features, and what was checked;
    None (after logging why) when that is not provably the computation the whole graph would do."""
    keys = rows["sha256"].tolist()
    store, why = why_not_cached(clf, paths, keys)
    if store is None:
        log(f"evaluate: scoring {Path(clf.path).name} from {clf.modality.stored_as}: {why}")
        return None
    session = _head_session(clf)
    probs = session.run(["probs"], {"features": store.get(keys)})[0]
    graph_sha256 = json.loads(clf.metadata["headstart.backbone_graph"])["sha256"]
    recorded = exported_outputs(paths, clf)
    if recorded and not why_rows_differ(store, recorded[0], graph_sha256, clf.modality):
        sample_keys, whole = recorded
        head_side = session.run(["probs"], {"features": store.get(sample_keys)})[0]
        source = "export's run of these model bytes on its parity samples"
    else:
        sample = rows.reset_index(drop=True).sort_values("sha256").head(params.export.parity_images)
        whole = clf.probs_batched(clf.load_rows(sample, paths, params.ingest.max_pixels))
        head_side = probs[sample.index.to_numpy()]
        source = f"the whole graph run on a sample of the {params.evaluate.split} split"
    diff = float(np.abs(whole - head_side).max())
    agree = bool((whole.argmax(1) == head_side.argmax(1)).all())
    check = {"images": int(len(whole)), "max_abs_diff_probs": diff, "argmax_agree": agree,
             "tolerance": params.export.parity_tolerance, "whole_graph": source}
    if diff > params.export.parity_tolerance or not agree:
        log(f"evaluate: warning: the whole graph from {clf.modality.stored_as} disagrees with its head on cached "
            f"features (max |dp| {diff:.1e} on {len(whole)} samples, argmax agree {agree}): the cache does not "
            f"describe these samples; scoring from {clf.modality.stored_as}")
        return None
    return probs, check
