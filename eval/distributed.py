"""Data parallel inside one config, on accelerate: which process this is and its share of the units.

``accelerate launch --num_processes N run.py ...`` (or ``torchrun --nproc_per_node N``) starts N
copies of the same job. :func:`current_shard` sees the launcher's ``WORLD_SIZE`` and starts
accelerate's :class:`~accelerate.PartialState` (gloo on a CPU, NCCL on GPUs, one GPU per
process); a plain ``python run.py`` is one process and never imports accelerate. Units are split
with ``PartialState.split_between_processes`` (contiguous blocks in plan order), so rank 0's rows
followed by rank 1's are the single-process table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's rank among ``world_size`` (``state``: accelerate's PartialState, or None)."""

    rank: int = 0
    world_size: int = 1
    state: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def split(self, items: Sequence[T]) -> list[T]:
        """This rank's contiguous block of ``items``."""
        if self.state is None:
            return list(items)
        with self.state.split_between_processes(list(items)) as part:
            return list(part)

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (e.g. its run folder)."""
        if self.state is None:
            return value
        from accelerate.utils import broadcast_object_list

        box = [value]
        broadcast_object_list(box, from_process=0)
        return box[0]


def launched_world_size() -> int:
    """The process count a distributed launcher announced (1 without one)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def current_shard() -> Shard:
    """This process's shard: a single-process Shard, or accelerate's state under a launcher."""
    if launched_world_size() <= 1:
        return Shard()
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return Shard(state.process_index, state.num_processes, state)


def local_device(device: str, shard: Shard) -> str:
    """``cuda`` under a multi-process launch means this process's own GPU (``cuda:<local rank>``)."""
    if shard.state is not None and device == "cuda":
        return str(shard.state.device)
    return device
