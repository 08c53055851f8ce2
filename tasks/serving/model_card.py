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
    classes = [c for c in paths.labels.read_text().split("\n") if c] if paths.labels.exists() else list(per_class)
    absent = (f"\n- not scored: {', '.join(metrics['classes_absent'])} (no image in the {params.evaluate.split} split; "
              f"the averages cover the classes present)" if metrics.get("classes_absent") else "")
    rows = "\n".join(f"| {c} | {r.train} | {r.val} | {r.test} | {per_class[c]['precision']:.3f} | "
                     f"{per_class[c]['recall']:.3f} | {per_class[c]['f1-score']:.3f} |"
                     for c, r in counts.iterrows() if c in per_class)
    parity = export.get("parity", {})
    int8 = (f"\n- int8 variant (`models/int8/model.onnx`): {params.evaluate.split} accuracy "
            f"{metrics['int8_accuracy']:.3f}, macro F1 {metrics['int8_f1_macro']:.3f}" if "int8_accuracy" in metrics
            else "")
    text = f"""# Model card — {params.export.triton_name}

## What it is
An image classifier over {len(classes)} classes: {", ".join(classes)}.
Backbone `{recipe['backbone']}` ({recipe['arch']}, weights {recipe['weights'][:16]}…, pretrained on ImageNet-1k unless
`backbone.weights` says otherwise), pooled features (`{recipe['layer']}`), and a {params.head.type} head
(C={params.head.C}, class weights {params.head.class_weight}) {training}.

## Input and output
`models/model.onnx` takes `images`: uint8 RGB NHWC `(batch, {size}, {size}, 3)`; resize on the client with
`{params.backbone.resize}` (letterbox on white for `pad`), as `tasks.images.load_uint8` does. It returns `logits` and
`probs` `(batch, {len(classes)})`; class order is `models/labels.txt`. Parity with the torch model at export:
max |Δp| {parity.get('max_abs_diff_probs', float('nan')):.1e} on {parity.get('images', 0)} held-out images.

## Data
Source `{params.ingest.source}`: {len(manifest)} usable images, {n_rejected} rejected at ingest (see
`data/prepared/rejected.csv`). Splits are stratified, seeded (seed {params.seed}) and grouped by
`ingest.group_pattern`, so near-duplicate variants never straddle train and test.

## Results ({params.evaluate.split} split, {metrics['n']} images; scored: {metrics['artifact']})
- accuracy {metrics['accuracy']:.3f}; macro precision / recall / F1 {metrics['precision_macro']:.3f} /
  {metrics['recall_macro']:.3f} / {metrics['f1_macro']:.3f}; weighted F1 {metrics['f1_weighted']:.3f}{int8}{absent}

| class | train | val | test | precision | recall | F1 |
|---|---|---|---|---|---|---|
{rows}

## Intended use and limits
For images like the training data. The model knows only these classes: anything else is still assigned one of them
(no "unknown" output; threshold `probs` if you need one). Classes with few test images have wide error bars. Features
come from an ImageNet backbone: images far from natural photos or clip-art (e.g. medical, satellite) may need
fine-tuning. Re-evaluate after any change of data distribution.
"""
    atomic_write_text(paths.models / "MODEL_CARD.md", text)
