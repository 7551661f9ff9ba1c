"""Multi-process (DDP) training through ``accelerate``: ``accelerate launch -m continual.run``
or ``torchrun --nproc-per-node N -m continual.run``.

What is split: only the training batches. Every process draws the same global batch of
``train.batch_size`` rows (same seeded generator) and trains on its contiguous share of the rows
(:func:`shard_rows`); the model, CRMA included, is wrapped in one ``DistributedDataParallel``
(:class:`Trainable`), whose gradient all-reduce averages the processes' gradients. Each process
scales its loss by ``world_size / global target tokens`` (see ``continual.train.loop``), so the
average is the gradient of the full batch's mean token loss, as in one process.

What every process does identically: data preparation, method setup and extra state (EWC's
Fisher, the replay memory, LwF's teacher, O-LoRA's frozen adapters): all come from the same
seeded data and the same synchronised weights; after every stage rank 0's trainable weights are
broadcast (:func:`sync_from_main`) so that float nondeterminism cannot make the ranks drift.

Evaluation also runs on every process, on the full holdout: wasteful (each process repeats the
main one's work) but trivially consistent, with no collective while one rank evaluates, so no
barrier that a long evaluation (lm-eval tasks) could time out. Only the main process writes run
files and talks to W&B (:func:`is_main`).

Not launched distributed (``WORLD_SIZE`` unset or 1): none of this runs and nothing changes.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn


def world_size() -> int:
    """Processes of this run (``WORLD_SIZE``, set by torchrun and accelerate launch)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_distributed() -> bool:
    return world_size() > 1


def is_main() -> bool:
    """Whether this process writes the run's files (rank 0, or the only process)."""
    return rank() == 0


def init() -> None:
    """Start the process group (accelerate's ``PartialState``: NCCL on CUDA, gloo on CPU) and
    pin this process to its GPU; nothing when not distributed."""
    if not is_distributed():
        return
    from accelerate import PartialState

    state = PartialState()
    if state.device.type == "cuda":
        torch.cuda.set_device(state.device)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every process (``obj`` itself when not distributed)."""
    if not is_distributed():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if is_distributed():
        torch.distributed.barrier()


def sync_from_main(modules: Iterable[nn.Module]) -> None:
    """Overwrite every process's trainable parameters with rank 0's (after a stage)."""
    if not is_distributed():
        return
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                torch.distributed.broadcast(p.data, src=0)


def shard_rows(n: int) -> slice:
    """This process's contiguous share of a batch of ``n`` rows (the first ``n % world``
    processes get one row more)."""
    world, r = world_size(), rank()
    size, extra = divmod(n, world)
    start = r * size + min(r, extra)
    return slice(start, start + size + (1 if r < extra else 0))


def all_sum(value: float) -> float:
    """``value`` summed over the processes (itself when not distributed)."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if torch.distributed.get_backend() == "nccl":
        t = t.cuda()
    torch.distributed.all_reduce(t)
    return float(t.cpu())


class Trainable(nn.Module):
    """The model and the modules that a method runs beside it by hooks (CRMA), as one module
    whose parameters DDP all-reduces; its forward is the model's."""

    def __init__(self, model: nn.Module, extra: list[nn.Module]) -> None:
        super().__init__()
        self.model = model
        self.extra = nn.ModuleList(extra)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)


def wrap(model: nn.Module, extra: list[nn.Module], device: torch.device) -> nn.Module:
    """``model`` (and ``extra``) in ``DistributedDataParallel`` for one stage (a stage's
    trainable parameters are fixed when it is wrapped, so each stage wraps anew)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [torch.cuda.current_device()] if device.type == "cuda" else None  # set by init()
    # buffers (rotary tables) are the same everywhere: no need to broadcast them every forward
    return DistributedDataParallel(Trainable(model, extra), device_ids=ids, broadcast_buffers=False)


def sync_tensors(tensors: Iterable[torch.Tensor]) -> None:
    """Overwrite ``tensors`` on every process with rank 0's (a method's extra state)."""
    if not is_distributed():
        return
    for t in tensors:
        torch.distributed.broadcast(t, src=0)


def agree_run_dir(own: Path) -> Path:
    """Rank 0's run directory on every process (Hydra's default name holds a timestamp, which
    may differ between processes started a second apart); a non-main process drops its file log
    handlers (run.log is the main process's) and its own directory if it is another, empty one."""
    if not is_distributed():
        return own
    run_dir = Path(broadcast_object(str(own)))
    if not is_main():
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(logging.WARNING)  # the main process logs the run
        other = own.resolve() != run_dir.resolve() and own.is_dir()
        if other and {p.name for p in own.iterdir()} <= {".hydra", "run.log"}:
            shutil.rmtree(own, ignore_errors=True)
    return run_dir


def finish() -> None:
    """End the process group (nothing when not distributed)."""
    if is_distributed() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
