"""The processes a fine-tuning run is spread over (torch.distributed), as one small object the run asks: which rank am
I, which samples are mine, what do all ranks' sums add up to. One process is a world of size 1 whose calls are no-ops,
so the run has one code path.

How the same answer comes out at any process count: `finetune.batch_size` stays the *global* batch. Each epoch a
DistributedSampler (seeded by the run's seed, `set_epoch` each epoch) deals the shuffled train set round-robin to the
ranks, and each rank takes batches of batch_size / N from its share, so the k-th step of all ranks together covers
exactly the k-th global batch of the same shuffled order (the sampler interleaves ranks). Every rank's batch has the
same size, so DDP's mean of the ranks' mean gradients is the global batch's mean gradient; the step count per epoch,
hence the LR schedule, does not depend on N. What does change with N: the augmentation draws (each rank has its own
generator) and float rounding (gradients are summed in another order). BatchNorm in train mode (`bn: train`) would
normalise over batch_size / N samples; the default `bn: eval` does not normalise over the batch at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from tasks.core.errors import UserError


@dataclass(frozen=True)
class World:
    """rank / size / local_rank of this process; size 1 when not launched by torchrun."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, curves and the summary, and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def per_rank_batch(self, global_batch: int) -> int:
        """batch_size / N; a one-line error when N does not divide it (the global batch must not depend on N)."""
        if global_batch % self.size:
            raise UserError(f"finetune.batch_size={global_batch} is not divisible by finetune.nproc={self.size}: the "
                            f"global batch is split evenly over the processes; use a multiple of {self.size}")
        return global_batch // self.size

    def train_order(self, n: int, seed: int, epoch: int) -> torch.Tensor:
        """This rank's share of the epoch's shuffled order of n train samples (DistributedSampler, set_epoch): every
        rank gets ceil(n / N) indices (the sampler repeats a few at the end so all shares are equal)."""
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(range(n), num_replicas=self.size, rank=self.rank, shuffle=True, seed=seed,
                                     drop_last=False)
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.int64)

    def shard(self, n: int) -> slice:
        """This rank's contiguous slice of n evaluation samples (no padding: sums are reduced, not means)."""
        per, extra = divmod(n, self.size)
        start = self.rank * per + min(self.rank, extra)
        return slice(start, start + per + (1 if self.rank < extra else 0))

    def sum(self, *values: float) -> tuple[float, ...]:
        """Each value summed over all ranks (float64 all-reduce); the values themselves in a world of one."""
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return tuple(float(v) for v in t)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast(self, value):
        """Rank 0's `value`, on every rank (a picklable object)."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def world_from_env() -> World:
    """This process's place in the run, from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); a world of one
    when not launched by torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))


def join_world(world: World, cuda: bool, timeout_s: float) -> None:
    """Join the process group (NCCL on CUDA, gloo on CPU) with a timeout on every collective, so a rank that stops
    answering ends the run instead of hanging it; nothing to join in a world of one."""
    if not world.distributed or dist.is_initialized():
        return
    if cuda:
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s))


def leave_world(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
