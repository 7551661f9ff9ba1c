"""One training stage: a fixed number of AdamW steps on one domain's blocks."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm
from transformers import get_scheduler

from continual.errors import ContinualError


class NumericalError(ContinualError):
    """A NaN or Inf loss or gradient: the stage cannot continue."""


@dataclass
class StepRecord:
    step: int  # 1-based optimizer step within the stage
    loss: float  # mean token cross-entropy of the batch (nats)
    grad_norm: float  # global L2 norm of all trainable gradients, before clipping
    lr: float  # learning rate of the first parameter group at this step


def batch_indices(
    n_blocks: int, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Endless batches of block indices: shuffled epochs, no block repeated within an epoch."""
    pending = torch.empty(0, dtype=torch.long)
    while True:
        while len(pending) < batch_size:
            pending = torch.cat([pending, torch.randperm(n_blocks, generator=generator)])
        yield pending[:batch_size]
        pending = pending[batch_size:]


def train_stage(
    model: torch.nn.Module,
    param_groups: list[dict],
    blocks: torch.Tensor,
    cfg: DictConfig,
    device: torch.device,
    generator: torch.Generator,
    desc: str = "train",
) -> list[StepRecord]:
    """Train for ``cfg.steps`` optimizer steps; returns one record per step.

    ``cfg``: steps, batch_size, micro_batch_size, lr, weight_decay, warmup_steps, scheduler,
    max_grad_norm (0 disables clipping; the norm is still measured). Raises NumericalError on a
    non-finite loss or gradient norm.
    """
    params = [p for group in param_groups for p in group["params"]]
    optimizer = torch.optim.AdamW(param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(
        cfg.scheduler, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.steps
    )
    micro = min(cfg.micro_batch_size, cfg.batch_size)
    batches = batch_indices(len(blocks), cfg.batch_size, generator)
    max_norm = cfg.max_grad_norm if cfg.max_grad_norm and cfg.max_grad_norm > 0 else math.inf
    records: list[StepRecord] = []
    model.train()
    bar = tqdm(range(1, cfg.steps + 1), desc=desc, unit="step")
    for step in bar:
        batch = blocks[next(batches)]
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for chunk in batch.split(micro):
            ids = chunk.to(device)
            loss = model(input_ids=ids, labels=ids).loss
            (loss * len(chunk) / len(batch)).backward()
            loss_sum += float(loss.detach()) * len(chunk)
        loss_value = loss_sum / len(batch)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
            raise NumericalError(
                f"{desc}: non-finite loss ({loss_value}) or gradient norm ({grad_norm}) at step "
                f"{step}. Lower train.lr, keep train.max_grad_norm > 0, or check the data."
            )
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        records.append(StepRecord(step, loss_value, grad_norm, lr))
        bar.set_postfix(loss=f"{loss_value:.3f}", gnorm=f"{grad_norm:.2f}")
    model.eval()
    return records
