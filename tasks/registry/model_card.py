"""`models/MODEL_CARD.md`: what the exported model is, what it was trained and tested on, how well it does, its limits."""

from __future__ import annotations

import json

import pandas as pd

from tasks.core.files import atomic_write_text
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths
from tasks.dataset.manifest import read_rejected
from tasks.extraction.fingerprint import feature_recipe
from tasks.model.finetune_record import finetune_summary


def write_model_card(params: Params, paths: ProjectPaths, manifest: pd.DataFrame, metrics: dict,
                     per_class: dict) -> None:
    """Write the card from the manifest, params and the evaluation just computed (atomically)."""
    counts = pd.crosstab(manifest["label"], manifest["split"]).reindex(columns=["train", "val", "test"], fill_value=0)
    n_rejected = len(read_rejected(paths))
    export = json.loads((paths.metrics / "export.json").read_text()) if (paths.metrics / "export.json").exists() else {}
    recipe = feature_recipe(params.backbone, params.seed)
    tuned = finetune_summary(paths)
    if tuned.get("kept") == "finetuned":
        training = (f"then fine-tuned end to end ({tuned['strategy']}, {tuned['init']} init; epoch "
                    f"{tuned['best_epoch']} kept: {tuned['reason']}; curves in `models/finetune/curves.png`)")
    elif tuned.get("strategy", "none") != "none":
        training = f"trained on frozen features (fine-tuning ({tuned['strategy']}) ran, but {tuned['reason']})"
    else:
        training = "trained on frozen features"
    size = params.backbone.input_size
    is_text = "max_length" in recipe
    noun = "texts" if is_text else "images"
    classes = [c for c in paths.labels.read_text().split("\n") if c] if paths.labels.exists() else list(per_class)
    absent = (f"\n- not scored: {', '.join(metrics['classes_absent'])} (no sample in the {params.evaluate.split} split; "
              f"the averages cover the classes present)" if metrics.get("classes_absent") else "")
    rows = "\n".join(f"| {c} | {r.train} | {r.val} | {r.test} | {per_class[c]['precision']:.3f} | "
                     f"{per_class[c]['recall']:.3f} | {per_class[c]['f1-score']:.3f} |"
                     for c, r in counts.iterrows() if c in per_class)
    parity = export.get("parity", {})
    int8 = (f"\n- int8 variant (`models/int8/model.onnx`): {params.evaluate.split} accuracy "
            f"{metrics['int8_accuracy']:.3f}, macro F1 {metrics['int8_f1_macro']:.3f}" if "int8_accuracy" in metrics
            else "")
    if is_text:
        what = f"""A text classifier over {len(classes)} classes: {", ".join(classes)}.
Backbone `{recipe['backbone']}` ({recipe['arch']}, weights {recipe['weights'][:16]}…), {recipe['pooling']}-pooled
token vectors of the first {recipe['max_length']} tokens, and a {params.head.type} head (C={params.head.C}, class
weights {params.head.class_weight}) {training}.

## Input and output
`models/model.onnx` takes `texts`: a batch of UTF-8 strings `(batch,)`; normalise them as ingest does (NFC, LF line
ends, stripped). The tokenizer (lower-casing, WordPiece, truncation to {recipe['max_length']} tokens keeping the final
[SEP]) is inside the graph as onnxruntime-extensions ops: register `onnxruntime_extensions.get_library_path()` with
the session. It returns `logits` and `probs` `(batch, {len(classes)})`; class order is `models/labels.txt`. Parity
with torch and the Hugging Face tokenizer at export: max |Δp| {parity.get('max_abs_diff_probs', float('nan')):.1e} on
{parity.get('images', 0)} held-out texts."""
    else:
        what = f"""An image classifier over {len(classes)} classes: {", ".join(classes)}.
Backbone `{recipe['backbone']}` ({recipe['arch']}, weights {recipe['weights'][:16]}…, pretrained on ImageNet-1k unless
`backbone.weights` says otherwise), pooled features (`{recipe['layer']}`), and a {params.head.type} head
(C={params.head.C}, class weights {params.head.class_weight}) {training}.

## Input and output
`models/model.onnx` takes `images`: uint8 RGB NHWC `(batch, {size}, {size}, 3)`; resize on the client with
`{params.backbone.resize}` (letterbox on white for `pad`), as `tasks.images.load_uint8` does. It returns `logits` and
`probs` `(batch, {len(classes)})`; class order is `models/labels.txt`. Parity with the torch model at export:
max |Δp| {parity.get('max_abs_diff_probs', float('nan')):.1e} on {parity.get('images', 0)} held-out images."""
    limits = ("For texts like the training data (language, length, register). The model knows only these classes: "
              "anything else is still assigned one of them (no \"unknown\" output; threshold `probs` if you need "
              "one). Only the first tokens count (backbone.max_length). Classes with few test texts have wide error "
              "bars. Re-evaluate after any change of data distribution." if is_text else
              """For images like the training data. The model knows only these classes: anything else is still assigned one of them
(no "unknown" output; threshold `probs` if you need one). Classes with few test images have wide error bars. Features
come from an ImageNet backbone: images far from natural photos or clip-art (e.g. medical, satellite) may need
fine-tuning. Re-evaluate after any change of data distribution.""")
    text = f"""# Model card — {params.export.triton_name}

## What it is
{what}

## Data
Source `{params.ingest.source}`: {len(manifest)} usable {noun}, {n_rejected} rejected at ingest (see
`data/prepared/rejected.csv`). Splits are stratified, seeded (seed {params.seed}) and grouped by
`ingest.group_pattern`, so near-duplicate variants never straddle train and test.

## Results ({params.evaluate.split} split, {metrics['n']} {noun}; scored: {metrics['artifact']})
- accuracy {metrics['accuracy']:.3f}; macro precision / recall / F1 {metrics['precision_macro']:.3f} /
  {metrics['recall_macro']:.3f} / {metrics['f1_macro']:.3f}; weighted F1 {metrics['f1_weighted']:.3f}{int8}{absent}

| class | train | val | test | precision | recall | F1 |
|---|---|---|---|---|---|---|
{rows}

## Intended use and limits
{limits}
"""
    atomic_write_text(paths.models / "MODEL_CARD.md", text)
