"""Raw samples through a torch model, as every parity gate's reference runs them."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tasks.core.modality_api import Modality
from tasks.core.params import Params


def torch_runner(modality: Modality, params: Params, model) -> Callable[[np.ndarray], object]:
    """raw samples -> the torch model's output (inference mode): pixels as they are, texts through the Hugging Face
    tokenizer at `backbone.max_length` (the reference the in-graph tokenizer must match)."""
    import torch

    to_inputs = modality.torch_input(params)

    def run(samples: np.ndarray):
        inputs = (samples,) if to_inputs is None else to_inputs(samples)
        with torch.inference_mode():
            return model(*(torch.from_numpy(a) for a in inputs))
    return run
