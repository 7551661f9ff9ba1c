"""Elastic weight consolidation on sequential LoRA: a quadratic penalty that anchors the LoRA
weights where earlier domains' (diagonal, empirical) Fisher information says they matter
(Kirkpatrick et al. 2017, PNAS; the online variant: Schwarz et al. 2018, "Progress & Compress",
with Huszar's 2018 correction)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from continual.errors import ConfigError
from continual.methods.lora import SequentialLoRA
from continual.methods.settings import no_crma, number
from continual.train.loop import TrainingSet, _accumulate, batch_indices
from continual.train.seeding import stage_seed

EWC_FILE = "ewc.safetensors"
MODES = ("separate", "online")
_FISHER_SEED = 15485863  # offset from the stage seed: the Fisher batches' own stream


def empirical_fisher(
    model: torch.nn.Module,
    params: dict[str, torch.nn.Parameter],
    train_set: TrainingSet,
    n_batches: int,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator,
    micro_batch_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher ``F = (1/K) sum_k g_k**2`` of ``params`` (float32), ``g_k``
    the gradient of the mean task loss (the training loss, labels from the data) of batch k,
    for ``K = n_batches`` batches of ``batch_size`` items drawn without repeats within an
    epoch; with ``batch_size=1`` this is the per-example empirical Fisher. The model runs in
    eval mode (no dropout), a batch in micro-batches of ``micro_batch_size`` (default: whole);
    its gradients are cleared afterwards."""
    was_training = model.training
    model.eval()
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    batches = batch_indices(len(train_set), batch_size, generator)
    for _ in range(n_batches):
        for p in params.values():
            p.grad = None
        micro = min(batch_size, micro_batch_size or batch_size)
        _accumulate(model, train_set.batch(next(batches)), micro, device)
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach().float() ** 2
    for p in params.values():
        p.grad = None
    model.train(was_training)
    return {n: f / n_batches for n, f in fisher.items()}


Anchor = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]  # (Fisher, anchor weights)


def ewc_penalty(
    params: dict[str, torch.nn.Parameter], anchors: list[Anchor], weight: float
) -> torch.Tensor:
    """``weight / 2 * sum_k sum_j F_k[j] * (theta[j] - theta*_k[j])**2`` over the anchors k
    (float32; zero without anchors)."""
    device = next(iter(params.values())).device
    total = torch.zeros((), device=device)
    for fisher, anchor in anchors:
        for n, p in params.items():
            total = total + (fisher[n] * (p.float() - anchor[n]) ** 2).sum()
    return weight / 2 * total


class EWCLoRA(SequentialLoRA):
    """EWC: one LoRA through every stage (as ``lora``) with the penalty of :func:`ewc_penalty`
    added to the task loss (logged as ``loss_ewc``). After each stage the diagonal empirical
    Fisher of the LoRA weights is estimated on that stage's training set
    (:func:`empirical_fisher`, ``fisher_batches`` batches of ``fisher_batch_size``).
    ``mode: separate`` keeps one (Fisher, anchor) per finished stage (Kirkpatrick et al.);
    ``online`` keeps one, ``F <- gamma F + F_new`` anchored at the latest weights (Schwarz et
    al.). Fisher and anchors are saved with each stage's adapters (``ewc.safetensors``)."""

    def __init__(self, name: str, **settings: Any) -> None:
        super().__init__(name, **settings)
        no_crma(name, self.cfg)
        self.weight = number(self.cfg, "ewc.weight", 0.0)
        self.gamma = number(self.cfg, "ewc.gamma", 0.0, 1.0)
        self.fisher_batches = number(self.cfg, "ewc.fisher_batches", 1, integer=True)
        self.fisher_batch_size = number(self.cfg, "ewc.fisher_batch_size", 1, integer=True)
        self.mode = self.cfg.ewc.get("mode")
        if self.mode not in MODES:
            raise ConfigError(
                f"method.ewc.mode={self.mode!r} is not one of {', '.join(MODES)}: separate "
                "(one penalty per finished stage) or online (one running Fisher)."
            )
        self.anchors: list[Anchor] = []

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        """The LoRA weights the penalty covers (those that train)."""
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def extra_losses(
        self, batch: dict[str, torch.Tensor], logits: torch.Tensor | None,
        targets: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        return {"ewc": ewc_penalty(self.trainable(), self.anchors, self.weight)}

    def after_stage(self, stage: int, domain: str) -> None:
        super().after_stage(stage, domain)
        params = self.trainable()
        generator = torch.Generator().manual_seed(stage_seed(self.seed, stage) + _FISHER_SEED)
        fisher = empirical_fisher(
            self.model, params, self.data[domain].training_set(), self.fisher_batches,
            self.fisher_batch_size, self.device, generator,
            int(self.train_cfg.get("micro_batch_size") or self.fisher_batch_size),
        )  # fmt: skip
        anchor = {n: p.detach().float().clone() for n, p in params.items()}
        if self.mode == "online" and self.anchors:
            old = self.anchors[0][0]
            fisher = {n: self.gamma * old[n] + f for n, f in fisher.items()}
            self.anchors = []
        self.anchors.append((fisher, anchor))

    def shared_tensors(self) -> list[torch.Tensor]:
        """Fisher and anchor of every stage (multi-process: rank 0's on every process)."""
        return [t for pair in self.anchors for table in pair for t in table.values()]

    def save(self, directory: Path) -> None:
        super().save(directory)
        tensors = {
            f"{k}/{part}/{n}": t.contiguous()
            for k, pair in enumerate(self.anchors)
            for part, table in zip(("fisher", "anchor"), pair, strict=True)
            for n, t in table.items()
        }
        save_file(tensors, directory / EWC_FILE, metadata={"mode": self.mode})

    def load(self, directory: Path, trained: list[str]) -> None:
        super().load(directory, trained)
        device = next(iter(self.trainable().values())).device
        tensors = load_file(directory / EWC_FILE, device=str(device))
        count = 1 + max((int(key.split("/", 1)[0]) for key in tensors), default=-1)
        self.anchors = [({}, {}) for _ in range(count)]
        for key, tensor in tensors.items():  # "<k>/fisher/<name>" and "<k>/anchor/<name>"
            k, part, name = key.split("/", 2)
            self.anchors[int(k)][("fisher", "anchor").index(part)][name] = tensor
