"""Per-row sample weights from head.class_weight, as scikit-learn's class_weight means them."""

from __future__ import annotations

import numpy as np

from tasks.core.errors import UserError


def class_weight_map(h, classes: list[str], counts: np.ndarray) -> dict[str, float] | None:
    """None ('none'), or {class: weight}: 'balanced' is n / (classes x count), as scikit-learn; a dict gives missing
    classes 1. A class in the dict that is not in train is a one-line error naming it."""
    if h.class_weight == "none":
        return None
    if h.class_weight == "balanced":
        n = counts.sum()
        return {c: float(n / (len(classes) * max(1, counts[i]))) for i, c in enumerate(classes)}
    unknown = sorted(set(h.class_weight) - set(classes))
    if unknown:
        raise UserError(f"head.class_weight: '{unknown[0]}' is not a class of the train split ({', '.join(classes)})")
    return {c: float(h.class_weight.get(c, 1.0)) for c in classes}


def row_weights(h, classes: list[str], y: np.ndarray) -> np.ndarray:
    """float32 weight of each row (class ids `y`), 1 everywhere when head.class_weight is none."""
    weights = class_weight_map(h, classes, np.bincount(y, minlength=len(classes)))
    if weights is None:
        return np.ones(len(y), np.float32)
    return np.array([weights[c] for c in classes], np.float32)[y]
