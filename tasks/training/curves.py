"""Learning curves of a fine-tuning run as a PNG: loss and accuracy per epoch, the kept epoch marked."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.core.files import atomic_path


def plot_curves(history: pd.DataFrame, best_epoch: int, title: str, dest: Path) -> None:
    """Two panels (loss; accuracy) over epochs from the history table; epoch 0 is the frozen head. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    h = history.sort_values("epoch")
    for col, style, label in (("train_loss", "o-", "train (augmented, running)"), ("fit_loss", "s--", "train sample"),
                              ("val_loss", "o-", "val")):
        if col in h and h[col].notna().any():
            ax_loss.plot(h["epoch"], h[col], style, label=label)
    for col, style, label in (("train_accuracy", "o-", "train (augmented, running)"), ("val_accuracy", "o-", "val")):
        if col in h and h[col].notna().any():
            ax_acc.plot(h["epoch"], h[col], style, label=label)
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"kept: epoch {best_epoch}")
        ax.set_xlabel("epoch (0 = frozen head)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
