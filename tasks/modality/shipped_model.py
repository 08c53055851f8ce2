"""The shipped classifier as a torch module: backbone + head, with the fine-tuned weights when fine-tuning kept them.

Export, the fine-tune stage and benchmarks build the model here, so there is one definition of "the model".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks.core.errors import UserError
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths
from tasks.modality.registry import modality_for
from tasks.model.finetune_record import finetune_summary, head_sha256
from tasks.model.head_format import Head

if TYPE_CHECKING:  # torch is imported only when a model is built: evaluate and the model card read summaries only
    from tasks.model.image_model import ImageModel
    from tasks.model.text_backbones import TextModel


def build_classifier(params: Params, head: Head, state: dict | None = None) -> ImageModel | TextModel:
    """raw samples' tensor -> (logits, probs): the params' backbone with `head` (as a HeadModule) on top, in eval
    mode; with `state`, the weights of a fine-tuned model are loaded over it."""
    from tasks.model.torch_head import HeadModule

    model, _ = modality_for(params.backbone).build_model(params, HeadModule(head))
    if state is not None:
        model.load_state_dict(state)
    return model.eval()


def shipped_state(paths: ProjectPaths) -> dict | None:
    """The fine-tuned weights when the fine-tune stage kept them, else None (the frozen backbone + head ships).
    Fine-tuned weights that started from another head than models/head.npz are a one-line error."""
    summary = finetune_summary(paths)
    if summary.get("kept") != "finetuned":
        return None
    if summary.get("head_sha256") != head_sha256(paths):
        raise UserError(f"{paths.finetune / 'model.pt'} was fine-tuned from another head than {paths.head}; "
                        f"re-run the finetune stage (python -m tasks.finetune)")
    f = paths.finetune / "model.pt"
    if not f.exists():
        raise UserError(f"{paths.finetune / 'summary.json'} says the fine-tuned model was kept, but {f} is missing; "
                        f"re-run the finetune stage")
    import torch

    return torch.load(f, map_location="cpu", weights_only=True)


def shipped_classifier(params: Params, paths: ProjectPaths) -> ImageModel | TextModel:
    """The model the pipeline ships: backbone + head, fine-tuned if the fine-tune stage kept that."""
    return build_classifier(params, Head.load(paths.head), shipped_state(paths))
