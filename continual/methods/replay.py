"""Experience replay on sequential LoRA: a small memory of earlier domains' training items
mixed into every batch (Chaudhry et al. 2019, "On Tiny Episodic Memories in Continual
Learning"; Rolnick et al. 2019, "Experience Replay for Continual Learning")."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from continual.errors import ConfigError
from continual.methods.lora import SequentialLoRA
from continual.methods.settings import no_crma, number
from continual.train.loop import IGNORE, TrainingSet
from continual.train.seeding import stage_seed

MEMORY_FILE = "replay_memory.json"
_MEMORY_SEED, _MIX_SEED = 7919, 104729  # offsets from the stage seed: own streams of numbers


def one_kind(method: str, data: Mapping[str, Any]) -> None:
    """Refuse a sequence whose trained domains mix text and pairs: their batches cannot be
    mixed (a text block's loss counts every token, a pair's only its response)."""
    kinds = {d.kind for d in data.values() if len(d.training_set())}
    if len(kinds) > 1:
        raise ConfigError(
            f"method={method} mixes several domains into each batch, but this sequence has "
            "text and pairs domains, whose batches cannot be mixed (a text block's loss counts "
            "every token, a pair's only its response); use a sequence of one kind, or "
            "method=lora / ewc / lwf."
        )


def choose_memory(n_items: int, size: int, generator: torch.Generator) -> list[int]:
    """``min(size, n_items)`` distinct item indices drawn uniformly (sorted)."""
    return sorted(torch.randperm(n_items, generator=generator)[:size].tolist())


def balanced_rows(
    pools: Sequence[Sequence[int]], n: int, generator: torch.Generator
) -> list[tuple[int, int]]:
    """``n`` rows ``(pool, item)``: the pools in turn from a random start (so balanced within
    one row), each item drawn uniformly from its pool."""
    start = int(torch.randint(len(pools), (1,), generator=generator))
    rows = []
    for j in range(n):
        pool = (start + j) % len(pools)
        items = pools[pool]
        rows.append((pool, items[int(torch.randint(len(items), (1,), generator=generator))]))
    return rows


@dataclass
class ReplayMix:
    """A stage's training set with replay: each batch keeps the first ``batch - n_memory`` of
    the drawn own items and fills ``n_memory`` rows from the memory, the rows' domains in turn
    from a random start (so the earlier domains are balanced within one row per batch), each
    item drawn uniformly from its domain's memory. ``len`` is the own set's (epochs count it)."""

    own: TrainingSet
    memory: list[tuple[TrainingSet, list[int]]]  # per earlier domain: its set, memory indices
    n_memory: int
    generator: torch.Generator

    def __len__(self) -> int:
        return len(self.own)

    def memory_rows(self) -> list[tuple[int, int]]:
        """(earlier domain, item index) of the next batch's memory rows."""
        return balanced_rows([items for _, items in self.memory], self.n_memory, self.generator)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        n_own = max(len(indices) - self.n_memory, 0)
        parts = [self.own.batch(indices[:n_own])] if n_own else []
        for domain, item in self.memory_rows():
            parts.append(self.memory[domain][0].batch(torch.tensor([item])))
        return concat_batches(parts)


def concat_batches(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack batches of one kind: text blocks as they are, pairs right-padded to the widest
    (padding: id 0, mask 0, label ``IGNORE``, so it carries no loss and is never attended)."""
    if "labels" not in parts[0]:
        return {"input_ids": torch.cat([p["input_ids"] for p in parts])}
    width = max(p["input_ids"].shape[1] for p in parts)
    fill = {"input_ids": 0, "attention_mask": 0, "labels": IGNORE}
    return {
        key: torch.cat([torch.nn.functional.pad(p[key], (0, width - p[key].shape[1]),
                                                value=value) for p in parts])
        for key, value in fill.items()
    }  # fmt: skip


class ReplayLoRA(SequentialLoRA):
    """REPLAY: one LoRA through every stage (as ``lora``) plus a memory of ``memory_size``
    training items per finished domain (chosen with the run's seed), from which a fraction
    ``replay_ratio`` of every batch is drawn once a memory exists; the optimizer steps and
    batch size are plain LoRA's. The memory (item indices per domain) is saved with each
    stage's adapters, so a resumed run replays the same items. Text and pairs domains cannot
    share a batch (their losses weigh tokens differently): such a sequence is refused."""

    def __init__(self, name: str, **settings: Any) -> None:
        super().__init__(name, **settings)
        no_crma(name, self.cfg)
        self.memory_size = number(self.cfg, "replay.memory_size", 1, integer=True)
        self.replay_ratio = number(self.cfg, "replay.replay_ratio", 0.0, 1.0)
        self.memory: dict[str, list[int]] = {}

    def bind(self, data: Mapping[str, Any], device: torch.device, train: Any, seed: int) -> None:
        super().bind(data, device, train, seed)
        one_kind(self.name, data)
        if self.replay_ratio > 0 and self.n_memory_rows() == 0:
            raise ConfigError(
                f"method.replay.replay_ratio={self.replay_ratio} of train.batch_size="
                f"{train.batch_size} rounds to no memory row per batch; raise the ratio (to at "
                f"least {0.5 / int(train.batch_size):.3g}) or the batch size, or set it to 0."
            )

    def n_memory_rows(self) -> int:
        """Memory rows per batch: ``replay_ratio * train.batch_size``, rounded half up."""
        return math.floor(self.replay_ratio * int(self.train_cfg.batch_size) + 0.5)

    def training_set(self, stage: int, domain: str) -> TrainingSet:
        own = super().training_set(stage, domain)
        if not self.memory or self.n_memory_rows() == 0:
            return own
        memory = [(self.data[d].training_set(), self.memory[d]) for d in self.trained]
        generator = torch.Generator().manual_seed(stage_seed(self.seed, stage) + _MIX_SEED)
        return ReplayMix(own, memory, self.n_memory_rows(), generator)

    def after_stage(self, stage: int, domain: str) -> None:
        super().after_stage(stage, domain)
        generator = torch.Generator().manual_seed(stage_seed(self.seed, stage) + _MEMORY_SEED)
        n_items = len(self.data[domain].training_set())
        self.memory[domain] = choose_memory(n_items, self.memory_size, generator)

    def save(self, directory: Path) -> None:
        super().save(directory)
        record = {"memory_size": self.memory_size, "memory": self.memory}
        (directory / MEMORY_FILE).write_text(json.dumps(record) + "\n")

    def load(self, directory: Path, trained: list[str]) -> None:
        super().load(directory, trained)
        self.memory = json.loads((directory / MEMORY_FILE).read_text())["memory"]
