"""Training checkpoints: everything needed to continue a run as if it had never stopped, written atomically.

The fine-tune run's `last.pt` holds the model, optimizer, LR scheduler and AMP scaler states, the epoch it completed,
the history so far (from which the best epoch follows), every RNG state (Python, NumPy, torch CPU and CUDA) and a
checkpoint key: a hash of the settings, head and data. A checkpoint with another key is never resumed.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from tasks.core.files import atomic_path


def rng_states() -> dict:
    """Snapshot of every random number generator training uses."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Put back the generators captured by `rng_states`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temp file in the same folder, then rename: a kill leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, key: str) -> dict | None:
    """The checkpoint at `path` if it exists and was written under the same checkpoint key, else None."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a checkpoint we cannot read is not worth failing the run for: start fresh
        return None
    return state if state.get("key") == key else None
