"""`models/MODEL_CARD.md`: what the exported model is, what it was trained and tested on, how well it does, its limits.

The card is a Jinja2 template (`tasks/registry/model_card.md.j2`); the paragraphs that differ by modality (what the
model takes, its limits) are the modality's own template (`Modality.card_template`, under `tasks/modality/cards/`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tasks.core.files import atomic_write_text
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths
from tasks.dataset.manifest import read_rejected
from tasks.extraction.fingerprint import feature_recipe
from tasks.modality import registry
from tasks.modality.registry import modality_for
from tasks.model.finetune_record import finetune_summary

TEMPLATE = "model_card.md.j2"


def _training(paths: ProjectPaths) -> str:
    """How the shipped weights were trained, in words (frozen features, or fine-tuned and which epoch was kept)."""
    tuned = finetune_summary(paths)
    if tuned.get("kept") == "finetuned":
        return (f"then fine-tuned end to end ({tuned['strategy']}, {tuned['init']} init; epoch "
                f"{tuned['best_epoch']} kept: {tuned['reason']}; curves in `models/finetune/curves.png`)")
    if tuned.get("strategy", "none") != "none":
        return f"trained on frozen features (fine-tuning ({tuned['strategy']}) ran, but {tuned['reason']})"
    return "trained on frozen features"


def _head_c(params: Params, paths: ProjectPaths) -> str:
    """C as fitted: the number, or with head.C=auto the C the path chose and how (head.json's fit record)."""
    head_file = paths.models / "head.json"
    fit = json.loads(head_file.read_text()).get("fit") if head_file.exists() else None
    if not fit:
        return str(params.head.C)
    if fit.get("C_scores"):
        return (f"{fit['C']:g}, chosen by {fit['cv_folds']}-fold CV (macro F1) over "
                + ", ".join(f"{c}: {v:.3f}" for c, v in fit["C_scores"].items()))
    return f"{fit['C']:g}"


def _class_rows(manifest: pd.DataFrame, per_class: dict) -> list[dict]:
    """One table row per scored class: its sample counts per split and its precision, recall and F1, each with its
    95 % interval (low, high) when the evaluation computed them."""
    counts = pd.crosstab(manifest["label"], manifest["split"]).reindex(columns=["train", "val", "test"], fill_value=0)

    def ci(c: str, key: str) -> tuple[float, float] | None:
        got = per_class[c]
        return (got[f"{key}_ci_low"], got[f"{key}_ci_high"]) if f"{key}_ci_low" in got else None

    return [{"name": c, "train": r.train, "val": r.val, "test": r.test, "precision": per_class[c]["precision"],
             "recall": per_class[c]["recall"], "f1": per_class[c]["f1-score"], "precision_ci": ci(c, "precision"),
             "recall_ci": ci(c, "recall"), "f1_ci": ci(c, "f1-score")}
            for c, r in counts.iterrows() if c in per_class]


def _pictures(paths: ProjectPaths) -> dict[str, str]:
    """Evaluate's pictures that exist, by name, as paths relative to the card's folder (models/)."""
    names = ("confusion_matrix", "reliability", "per_class_f1", "top_losses")
    return {n: (paths.plots / f"{n}.png").relative_to(paths.models).as_posix() for n in names
            if (paths.plots / f"{n}.png").exists()}


def _top_losses(paths: ProjectPaths, k: int = 5) -> list[dict]:
    """The first `k` rows of evaluate's top-losses table (models/plots/top_losses.csv), if there is one, each with a
    `sample` cell for a markdown table: the text's beginning, or the file's path."""
    file = paths.plots / "top_losses.csv"
    rows = pd.read_csv(file).head(k).fillna("").to_dict("records") if file.exists() else []
    for r in rows:
        text = str(r.get("excerpt") or "").replace("|", "/")
        r["sample"] = f"{text[:60]}…" if text else f"`{r['path']}`"
    return rows


def render_model_card(params: Params, paths: ProjectPaths, manifest: pd.DataFrame, metrics: dict,
                      per_class: dict) -> str:
    """The card's text for the candidate in `paths.models`, from the manifest, params and its evaluation."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    export = json.loads((paths.metrics / "export.json").read_text()) if (paths.metrics / "export.json").exists() else {}
    classes = [c for c in paths.labels.read_text().split("\n") if c] if paths.labels.exists() else list(per_class)
    env = Environment(loader=FileSystemLoader([Path(__file__).parent, Path(registry.__file__).parent]),
                      keep_trailing_newline=True, undefined=StrictUndefined, autoescape=False)
    return env.get_template(TEMPLATE).render(
        params=params, modality=modality_for(params.backbone), recipe=feature_recipe(params.backbone, params.seed),
        training=_training(paths), head_c=_head_c(params, paths), classes=classes, parity=export.get("parity", {}),
        nan=float("nan"),
        n_samples=len(manifest), n_rejected=len(read_rejected(paths)), metrics=metrics,
        rows=_class_rows(manifest, per_class), pictures=_pictures(paths), losses=_top_losses(paths))


def write_model_card(params: Params, paths: ProjectPaths, manifest: pd.DataFrame, metrics: dict,
                     per_class: dict) -> None:
    """Write the card from the manifest, params and the evaluation just computed (atomically)."""
    atomic_write_text(paths.models / "MODEL_CARD.md", render_model_card(params, paths, manifest, metrics, per_class))
