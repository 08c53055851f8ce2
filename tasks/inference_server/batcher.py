"""Dynamic batching, as Triton's `dynamic_batching` does it: concurrent requests for the same model version are
stacked into one ONNX Runtime call of at most `max_batch_size` samples. Small on purpose: one asyncio queue, a fixed
number of instances (ONNX Runtime calls in worker threads), results split back in request order.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Job:
    key: object                  # what must match to share a batch: the session and the requested outputs
    run: object                  # callable(inputs: np.ndarray) -> list[np.ndarray]
    samples: np.ndarray
    future: asyncio.Future = field(repr=False)


class DynamicBatcher:
    """Queue requests; `submit` returns the outputs for exactly the request's rows.

    Up to `instances` batches run at once (Triton's instance_group count). A free instance takes everything queued
    (up to max_batch_size) without waiting: requests that arrive while the instances are busy are what forms a batch,
    so an idle server adds no delay and a loaded one batches. `max_queue_delay_us` is only ever an upper bound."""

    def __init__(self, max_batch_size: int, max_queue_delay_us: int, enabled: bool = True, instances: int = 1):
        self.max_batch_size = max_batch_size
        self.delay = max_queue_delay_us / 1e6
        self.enabled = enabled
        self.instances = max(1, instances)
        self._queue: asyncio.Queue[_Job] | None = None
        self._free: asyncio.Semaphore | None = None
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self.batches_run = 0     # ONNX Runtime calls (Triton's execution_count)
        self.rows_run = 0        # samples inferred (Triton's inference_count)
        self.largest_batch = 0

    async def submit(self, key, run, samples: np.ndarray) -> list[np.ndarray]:
        """The outputs of `run` for `samples`, computed alone or stacked with other requests that share `key`."""
        if not self.enabled:
            outputs = await asyncio.to_thread(run, samples)
            self.batches_run += 1
            self.rows_run += len(samples)
            return outputs
        if self._queue is None:
            self._queue, self._free = asyncio.Queue(), asyncio.Semaphore(self.instances)
            self._task = asyncio.create_task(self._loop())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(key, run, samples, future))
        return await future

    async def _loop(self) -> None:
        pending: list[_Job] = []
        while True:
            await self._free.acquire()
            first = pending.pop(0) if pending else await self._queue.get()
            batch, rows = [first], len(first.samples)
            while rows < self.max_batch_size and not pending:
                try:
                    job = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if job.key == first.key and rows + len(job.samples) <= self.max_batch_size:
                    batch.append(job)
                    rows += len(job.samples)
                else:
                    pending.append(job)  # another version or too big to join: it leads the next batch
            task = asyncio.create_task(self._run(batch, rows))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[_Job], rows: int) -> None:
        try:
            stacked = batch[0].samples if len(batch) == 1 else np.concatenate([j.samples for j in batch])
            try:
                outputs = await asyncio.to_thread(batch[0].run, stacked)
            except Exception as exc:  # one failing batch must not stop the loop; each caller gets the error
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                return
            self.batches_run += 1
            self.rows_run += rows
            self.largest_batch = max(self.largest_batch, rows)
            start = 0
            for job in batch:
                n = len(job.samples)
                if not job.future.done():  # the client may have gone away
                    job.future.set_result([o[start : start + n] for o in outputs])
                start += n
        finally:
            self._free.release()
