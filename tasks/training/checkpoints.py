"""Training checkpoints: everything needed to continue a run as if it had never stopped, written atomically.

The fine-tune run's `last.pt` holds the model, optimizer, LR scheduler and AMP scaler states, the epoch it completed,
the history so far (from which the best epoch follows), every RNG state (Python, NumPy, torch CPU and CUDA) and a
checkpoint key: a hash of the settings, head and data. A checkpoint with another key is never resumed.
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

import numpy as np
import torch

from tasks.core.files import atomic_path
from tasks.core.progress import log


def rng_states() -> dict:
    """Snapshot of every random number generator training uses, as tensors and plain Python values only, so a
    checkpoint loads with `torch.load(weights_only=True)` (no pickled objects, no code run on load)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss], "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos,
                                                                   has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Put back the generators captured by `rng_states`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a model state's names, dtypes, shapes and bytes, in name order: equal digests mean bitwise-equal
    weights and buffers (the fine-tune summary records it, so two runs can be compared without keeping both)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temp file in the same folder, then rename: a kill leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, key: str) -> dict | None:
    """The checkpoint at `path` if it exists, loads safely (`weights_only=True`: tensors and plain values only) and
    was written under the same checkpoint key, else None. A checkpoint that cannot be read, or belongs to other
    settings or data, is reported by name (the run then starts over)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, or holding pickled objects a safe load refuses
        why = re.sub(r"\x1b\[[0-9;]*m", "", str(exc).splitlines()[0])[:100]  # torch's message carries terminal bold
        log(f"finetune: warning: cannot resume from {path}: not a safe-loadable checkpoint ({why}); starting over")
        return None
    if state.get("key") != key:
        log(f"finetune: {path} was written for other settings, head or data; starting over")
        return None
    return state
