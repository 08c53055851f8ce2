"""Evaluate's pictures and the tables DVC plots them from: the normalised confusion matrix, a reliability diagram with
its expected calibration error, per-class F1 with 95 % intervals, and the test samples with the highest loss (a
thumbnail gallery for images, a table for texts).

Rendered with matplotlib's object API (Figure + its Agg canvas through `savefig`), never pyplot: pyplot's backend
machinery costs ~0.5 s of import on every head change. Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.core.files import atomic_path

RELIABILITY_BINS = 10
TOP_LOSSES = 16


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # not pyplot: no GUI backend machinery, ~0.5 s less to import

    return Figure(figsize=(width, height), dpi=110)


def _save(fig, dest: Path) -> None:
    with atomic_path(dest, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")


def plot_confusion(cm: np.ndarray, classes: list[str], title: str, dest) -> None:
    """Render a row-normalised confusion matrix (each row: shares of that actual class) with counts, to PNG."""
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    fig = _figure(1.0 + 0.75 * n, 0.8 + 0.65 * n)
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title, fontsize=10)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, f"{cm[i, j]}", ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of actual class")
    fig.tight_layout()
    _save(fig, dest)


def reliability(probs: np.ndarray, correct: np.ndarray, bins: int = RELIABILITY_BINS) -> tuple[pd.DataFrame, float]:
    """(one row per non-empty confidence bin: bin, confidence (mean top probability), accuracy, count; expected
    calibration error = sum over bins of count/n x |accuracy - confidence|). Bins are equal-width on [0, 1]."""
    conf = probs.max(axis=1)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    rows = [{"bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}", "confidence": float(conf[which == b].mean()),
             "accuracy": float(correct[which == b].mean()), "count": int((which == b).sum())}
            for b in range(bins) if (which == b).any()]
    table = pd.DataFrame(rows, columns=["bin", "confidence", "accuracy", "count"])
    ece = float((table["count"] / max(len(conf), 1) * (table["accuracy"] - table["confidence"]).abs()).sum())
    return table, ece


def plot_reliability(table: pd.DataFrame, ece: float, title: str, dest) -> None:
    """Reliability diagram: accuracy against mean confidence per bin (a calibrated model lies on the diagonal)."""
    fig = _figure(4.4, 4.2)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="calibrated")
    ax.plot(table["confidence"], table["accuracy"], marker="o", color="tab:blue", label="model")
    for _, r in table.iterrows():
        ax.annotate(str(r["count"]), (r["confidence"], r["accuracy"]), textcoords="offset points", xytext=(3, -10),
                    fontsize=7, color="grey")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}\nexpected calibration error {ece:.3f}", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.subplots_adjust(left=0.15, right=0.96, bottom=0.12, top=0.88)
    _save(fig, dest)


def per_class_f1_table(per_class: dict) -> pd.DataFrame:
    """class, f1, ci_low, ci_high, support: one row per scored class."""
    return pd.DataFrame([{"class": c, "f1": v["f1-score"], "ci_low": v["f1-score_ci_low"],
                          "ci_high": v["f1-score_ci_high"], "support": int(v["support"])}
                         for c, v in per_class.items()])


def plot_per_class_f1(table: pd.DataFrame, title: str, dest) -> None:
    """Horizontal bars of each class's F1 with its 95 % interval as an error bar."""
    fig = _figure(5.2, 1.0 + 0.38 * len(table))
    ax = fig.subplots()
    y = np.arange(len(table))
    err = np.vstack([table["f1"] - table["ci_low"], table["ci_high"] - table["f1"]])
    ax.barh(y, table["f1"], xerr=err, color="tab:blue", alpha=0.75, ecolor="black", capsize=3)
    ax.set_yticks(y, [f"{c} (n={s})" for c, s in zip(table["class"], table["support"])], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 with 95 % interval")
    ax.set_title(title, fontsize=9)
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.36, right=0.96, bottom=0.45 / height + 0.05, top=1 - 0.45 / height)
    _save(fig, dest)


def top_losses(rows: pd.DataFrame, probs: np.ndarray, classes: list[str], k: int = TOP_LOSSES) -> pd.DataFrame:
    """The `k` samples with the highest cross-entropy loss (-ln p(given label)), highest first: path, given,
    predicted, p_given, p_predicted, loss, and an excerpt for texts."""
    index = {c: i for i, c in enumerate(classes)}
    given = rows["label"].to_numpy()
    p_given = np.array([probs[i, index[g]] for i, g in enumerate(given)])
    loss = -np.log(np.clip(p_given, 1e-12, 1.0))
    order = np.argsort(-loss, kind="stable")[:k]
    table = pd.DataFrame({"path": rows["path"].to_numpy()[order], "given": given[order],
                          "predicted": np.array(classes)[probs[order].argmax(1)],
                          "p_given": p_given[order], "p_predicted": probs[order].max(1), "loss": loss[order]})
    if "text" in rows and rows["text"].notna().any():
        table["excerpt"] = [" ".join(str(t).split())[:160] for t in rows["text"].to_numpy()[order]]
    return table


def plot_top_losses(table: pd.DataFrame, root: Path, title: str, dest, thumb: int = 112) -> None:
    """A gallery of the top-loss images, each thumbnail captioned with its given and predicted labels; for texts
    (an `excerpt` column) the same rows as a table. The gallery is composed with Pillow, not matplotlib: sixteen
    axes cost seconds to lay out and draw, pasting sixteen thumbnails milliseconds."""
    if "excerpt" in table:
        _plot_text_losses(table, title, dest)
        return
    from PIL import Image, ImageDraw, ImageFont

    from tasks.dataset.images import to_rgb  # transparency on white, as the model sees it

    cols, pad, caption, head = 4, 10, 30, 28
    nrows = max(1, -(-len(table) // cols))
    cell_w, cell_h = thumb + 2 * pad + 40, thumb + caption + pad
    sheet = Image.new("RGB", (cols * cell_w, head + nrows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    font, big = ImageFont.load_default(size=11), ImageFont.load_default(size=13)
    draw.text((pad, 7), title, fill="black", font=big)
    for i, (_, r) in enumerate(table.iterrows()):
        x, y = (i % cols) * cell_w, head + (i // cols) * cell_h
        try:
            with Image.open(root / r["path"]) as img:
                img.draft("RGB", (thumb, thumb))  # JPEG: decode at reduced size
                img.thumbnail((thumb, thumb), Image.BILINEAR, reducing_gap=2.0)
                img = to_rgb(img)
                sheet.paste(img, (x + (cell_w - img.width) // 2, y + (thumb - img.height) // 2))
        except OSError:  # a file gone since ingest: keep its caption, say so
            draw.text((x + pad, y + thumb // 2), "(file missing)", fill="grey", font=font)
        draw.rectangle((x + (cell_w - thumb) // 2 - 1, y - 1, x + (cell_w + thumb) // 2, y + thumb), outline="#bbbbbb")
        draw.text((x + pad, y + thumb + 3), f"given {r['given']}", fill="black", font=font)
        draw.text((x + pad, y + thumb + 16), f"pred {r['predicted']} ({r['p_predicted']:.2f})", fill="#b00020",
                  font=font)
    with atomic_path(dest, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG", compress_level=1)


def _plot_text_losses(table: pd.DataFrame, title: str, dest) -> None:
    """The top-loss texts as a table picture: given, predicted (probability), loss, the text's beginning."""
    fig = _figure(11, 0.6 + 0.28 * (len(table) + 1))
    ax = fig.subplots()
    ax.axis("off")
    cells = [[r["given"], f"{r['predicted']} ({r['p_predicted']:.2f})", f"{r['loss']:.2f}", r["excerpt"][:90]]
             for _, r in table.iterrows()]
    if cells:
        grid = ax.table(cellText=cells, colLabels=["given", "predicted", "loss", "text"], loc="upper left",
                        cellLoc="left", colWidths=[0.12, 0.16, 0.06, 0.66])
        grid.auto_set_font_size(False)
        grid.set_fontsize(7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save(fig, dest)
