"""Multi-task (joint) training, the usual upper bound of a continual chain: every stage trains
one LoRA on all the sequence's domains at once, with the chain's steps and schedule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from continual.methods.lora import SequentialLoRA
from continual.methods.replay import ReplayMix, one_kind
from continual.methods.settings import no_crma
from continual.train.loop import TrainingSet
from continual.train.seeding import stage_seed

_JOINT_SEED = 1299709  # offset from the stage seed: the joint batches' own stream


class JointLoRA(SequentialLoRA):
    """JOINT: one LoRA; every stage draws each batch from all the sequence's trained domains
    (rows assigned to the domains in turn from a random start, so balanced within one row;
    items uniform within a domain), for the same optimizer steps and LR schedule as the chain's
    stage. After the last stage the model has seen every domain for the chain's total steps:
    its final holdout losses are the multi-task reference; its per-stage rows are not a chain
    (the forgetting and BWT computed from them have no continual meaning). Unlike a single
    stage of ``N * steps``, the LR schedule restarts at each stage, as in the chain."""

    def __init__(self, name: str, **settings: Any) -> None:
        super().__init__(name, **settings)
        no_crma(name, self.cfg)

    def bind(self, data: Mapping[str, Any], device: torch.device, train: Any, seed: int) -> None:
        super().bind(data, device, train, seed)
        one_kind(self.name, data)

    def training_set(self, stage: int, domain: str) -> TrainingSet:
        sets = [d.training_set() for d in self.data.values()]
        every = [(s, list(range(len(s)))) for s in sets if len(s)]  # the holdout-only left out
        generator = torch.Generator().manual_seed(stage_seed(self.seed, stage) + _JOINT_SEED)
        own = super().training_set(stage, domain)
        return ReplayMix(own, every, int(self.train_cfg.batch_size), generator)
