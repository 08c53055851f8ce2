"""The head format: a classifier on cached features saved framework-neutral, as its standardisation and layers.

`models/head.npz` holds the feature standardisation (`mean`, `scale`), the layers (`weight_i`, `bias_i`), the class
names, the fingerprint of the features it was fitted on and its kind. Logistic regression's and the linear SVM's
decision functions are exactly one linear layer; the MLP is two with a ReLU between. Export turns the same layers
into the last layers of the ONNX graph (tasks.model.torch_head), so no sklearn is needed at serving time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.core.errors import UserError
from tasks.core.files import atomic_path


@dataclass
class Head:
    """logits = layers applied in turn to standardised features ((x - mean) / scale), ReLU between layers.

    A linear head (logreg, linear SVM) has one layer; the MLP head has two. `classes[i]` names logit i.
    """

    layers: list[tuple[np.ndarray, np.ndarray]]  # (weight: out x in, bias: out), input to output
    classes: list[str]
    fingerprint: str
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    kind: str = "linear"

    def __post_init__(self):
        d = self.layers[0][0].shape[1]
        self.mean = np.zeros(d) if self.mean is None else np.asarray(self.mean)
        self.scale = np.ones(d) if self.scale is None else np.asarray(self.scale)

    def require_features(self, fingerprint: str, path) -> None:
        """One-line UserError unless this head was fitted on features with `fingerprint` (what params select)."""
        if self.fingerprint != fingerprint:
            raise UserError(f"{path} was trained on features {self.fingerprint}, but params select {fingerprint}; "
                            f"re-run the head stage first")

    def logits(self, feats: np.ndarray) -> np.ndarray:
        z = (feats.astype(np.float64) - self.mean) / self.scale
        for i, (w, b) in enumerate(self.layers):
            z = z @ w.T.astype(np.float64) + b
            if i < len(self.layers) - 1:
                z = np.maximum(z, 0.0)
        return z

    def probs(self, feats: np.ndarray) -> np.ndarray:
        z = self.logits(feats)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def save(self, path) -> None:
        arrays = {f"weight_{i}": w.astype(np.float32) for i, (w, _) in enumerate(self.layers)}
        arrays |= {f"bias_{i}": b.astype(np.float32) for i, (_, b) in enumerate(self.layers)}
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **arrays, mean=self.mean.astype(np.float32), scale=self.scale.astype(np.float32),
                     classes=np.array(self.classes), fingerprint=np.array(self.fingerprint), kind=np.array(self.kind))

    @classmethod
    def load(cls, path) -> "Head":
        """The head saved by the head stage (or a one-layer head in the earlier weight/bias format)."""
        if not path.exists():
            raise UserError(f"{path} not found; run the head stage first (python -m tasks.head)")
        z = np.load(path, allow_pickle=False)
        if "weight" in z:  # earlier format: one linear layer on raw features
            layers, mean, scale, kind = [(z["weight"], z["bias"])], None, None, "linear"
        else:
            n = sum(1 for k in z.files if k.startswith("weight_"))
            layers = [(z[f"weight_{i}"], z[f"bias_{i}"]) for i in range(n)]
            mean, scale, kind = z["mean"], z["scale"], str(z["kind"])
        return cls(layers, [str(c) for c in z["classes"]], str(z["fingerprint"]), mean, scale, kind)
