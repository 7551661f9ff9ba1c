"""Multi-task (joint) training, the usual upper bound of a continual chain: one stage trains
one LoRA on all the sequence's domains at once, for the chain's total optimizer steps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from continual.methods.lora import SequentialLoRA
from continual.methods.replay import balanced_rows, concat_batches, one_kind
from continual.methods.settings import no_crma
from continual.train.loop import TrainingSet, stage_steps
from continual.train.seeding import stage_seed

_JOINT_SEED = 1299709  # offset from the stage seed: the joint batches' own stream
STAGE = "joint"  # the one stage's name: its metric rows, adapters/stage1_joint, progress


@dataclass
class JointMix:
    """Every trained domain's training set as one: a batch's rows go to the domains in turn
    from a random start (balanced within one row), each item drawn uniformly within its
    domain; the drawn indices only count the rows. ``len``: the items of all domains (the
    loop's epoch count)."""

    sets: Sequence[TrainingSet]
    generator: torch.Generator

    def __len__(self) -> int:
        return sum(len(s) for s in self.sets)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        pools = [range(len(s)) for s in self.sets]
        rows = balanced_rows(pools, len(indices), self.generator)
        return concat_batches([self.sets[d].batch(torch.tensor([i])) for d, i in rows])


class JointLoRA(SequentialLoRA):
    """JOINT: one LoRA trained in a single stage, named ``joint``, on all the sequence's
    trained domains at once (balanced batches, :class:`JointMix`), for the chain's total
    optimizer steps (the sum of what each domain's stage would take: ``train.steps`` each, or
    ``train.epochs`` passes over each domain's training set) under one LR schedule (one warmup),
    with the chain's batch size. Its final holdout losses are the multi-task reference; it is
    not a chain, so forgetting, BWT and FWT are not computed for it
    (:func:`continual.metrics.multitask_summary`)."""

    def __init__(self, name: str, **settings: Any) -> None:
        super().__init__(name, **settings)
        no_crma(name, self.cfg)

    def bind(self, data: Mapping[str, Any], device: torch.device, train: Any, seed: int) -> None:
        super().bind(data, device, train, seed)
        one_kind(self.name, data)

    def stages(self, order: list[str]) -> list[str]:
        return [STAGE]

    def _sets(self) -> list[TrainingSet]:
        """The training sets of the trained domains (a holdout-only domain has none)."""
        return [s for s in (d.training_set() for d in self.data.values()) if len(s)]

    def stage_steps(self, stage: int, domain: str) -> int:
        return sum(stage_steps(self.train_cfg, len(s)) for s in self._sets())

    def training_set(self, stage: int, domain: str) -> JointMix:
        generator = torch.Generator().manual_seed(stage_seed(self.seed, stage) + _JOINT_SEED)
        return JointMix(self._sets(), generator)
