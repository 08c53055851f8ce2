"""Stage `finetune`: train the backbone and head end to end on pixels, starting from the trained head (LP-FT).

`finetune.strategy` picks what trains (tasks.training.freezing): `none` ships the head on frozen features and returns
at once; `freeze` trains only the head, on augmented pixels; `last_n`, `full` and `gradual` unfreeze blocks from the top, with
layer-wise learning-rate decay. AdamW, linear warm-up then cosine decay per step, label smoothing, random resized
crop / flip / colour jitter on uint8 images through the same ImageModel (normalisation in the graph) that is exported.

The frozen head is scored on val as epoch 0. After each epoch the model is scored on val; the best epoch (val accuracy,
ties: val loss) is kept, and the stage says which one and why. If no epoch beats epoch 0 the head on frozen features
ships: fine-tuning never delivers a model worse than the head on validation. Training stops after `finetune.patience`
epochs without a better fine-tuned epoch.

Every epoch ends with an atomic checkpoint in `models/checkpoints/finetune/` (model, optimizer, scheduler, scaler,
RNG states, history, and a key of the settings, head and data). A run that finds a checkpoint with the same key
continues after its epoch and, on CPU, reaches bitwise the same weights as an uninterrupted run: each epoch's shuffling
and augmentation are seeded from (seed, epoch), not from whatever ran before. The run itself, step by step, is
`tasks.training.finetune_run`; this module decides whether one is needed (torch is imported only then) and on how
many processes: with `finetune.nproc` > 1 (or `auto` on a machine with several GPUs) the stage relaunches its run
under torchrun, DDP (`tasks.training.distributed_launch`), so `python -m tasks.finetune`, `dvc repro`, `headstart
stage finetune` and the Prefect task all get it. `finetune.batch_size` stays the global batch at any process count.

Outputs in `models/finetune/`: summary.json, history.csv (DVC plots), curves.png, and model.pt (the kept ImageModel
state dict) when the fine-tuned model was kept. Export and evaluate pick it up from there.
"""

from __future__ import annotations

from tasks.core.errors import UserError
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths, default_paths
from tasks.core.progress import log
from tasks.core.stage_cli import run_stage_cli
from tasks.model.finetune_record import clear_finetune_outputs, write_finetune_summary


def run_finetune(params: Params, paths: ProjectPaths | None = None) -> dict:
    """Fine-tune per `params.finetune` and keep the best of {frozen head, each epoch} on val; returns the summary
    (also written to models/finetune/summary.json). With strategy none, records that the head ships and returns."""
    paths = paths or default_paths()
    p = params.finetune
    if p.strategy == "none":
        clear_finetune_outputs(paths)
        summary = {"strategy": "none", "kept": "head", "reason": "finetune.strategy is none: the head on frozen "
                                                                  "features ships"}
        write_finetune_summary(paths, summary)
        log("finetune: strategy none; the head on frozen features ships")
        return summary
    if params.backbone.layer != "pooled":
        raise UserError(f"finetune.strategy={p.strategy} needs backbone.layer=pooled (got '{params.backbone.layer}'): "
                        f"an intermediate-layer cut cannot be trained end to end")
    from tasks.training.distributed_launch import launch, resolve_nproc

    nproc = resolve_nproc(p)
    if nproc > 1:
        return launch(params, paths, nproc)
    from tasks.training.finetune_run import train

    return train(params, paths)


def main(argv: list[str] | None = None) -> None:
    run_stage_cli(run_finetune, __name__, argv)


if __name__ == "__main__":
    main()
