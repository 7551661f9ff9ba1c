"""Learning without Forgetting on sequential LoRA: distillation towards the previous stage's
model on the current batch (Li & Hoiem 2017, TPAMI; the temperature-scaled KL of Hinton et al.
2015). No second copy of the base model: the teacher is the previous stage's LoRA weights,
swapped into the same modules for one extra forward pass without gradients."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from continual.errors import ConfigError
from continual.methods.lora import SequentialLoRA
from continual.methods.settings import no_crma, number
from continual.train.loop import IGNORE, response_logits


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T**2 * KL(softmax(teacher / T) || softmax(student / T))``, summed over the vocabulary
    and averaged over the positions where ``mask`` is true (float32)."""
    t = torch.log_softmax(teacher.float() / temperature, dim=-1)
    s = torch.log_softmax(student.float() / temperature, dim=-1)
    kl = (t.exp() * (t - s)).sum(-1)
    mask = mask.to(kl.dtype)
    return temperature**2 * (kl * mask).sum() / mask.sum().clamp(min=1.0)


def task_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits at the positions the training loop scores (the ``logits`` that
    :data:`continual.train.loop.ExtraLosses` receives): every next-token position of a text
    block, the response positions of pairs."""
    if "labels" not in batch:
        return model(input_ids=batch["input_ids"]).logits[:, :-1]
    return response_logits(model, batch)[0]


class LwFLoRA(SequentialLoRA):
    """LwF: one LoRA through every stage (as ``lora``) plus ``weight * T**2 *
    KL(teacher_T || student_T)`` over the positions that carry task loss (every position of a
    text block, the response positions of pairs), logged as ``loss_lwf``. The teacher is the
    model after the previous stage, i.e. the same base with that stage's LoRA weights (kept as
    one copy of the adapter tensors), run in eval mode (no dropout); the term is zero during
    the first stage. The teacher needs no extra file: it is the adapter saved by that stage."""

    extra_losses_use_logits = True  # the student's logits, distilled towards the teacher's

    def __init__(self, name: str, **settings: Any) -> None:
        super().__init__(name, **settings)
        no_crma(name, self.cfg)
        self.weight = number(self.cfg, "lwf.weight", 0.0)
        self.temperature = number(self.cfg, "lwf.temperature", 0.0)
        if self.temperature == 0:
            raise ConfigError("method.lwf.temperature=0 must be > 0 (the softmax temperature T).")
        self.teacher: dict[str, torch.Tensor] = {}

    def remember_teacher(self) -> None:
        """Copy the current LoRA weights: the teacher of the next stage."""
        self.teacher = {
            n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad
        }

    @contextlib.contextmanager
    def teacher_weights(self) -> Iterator[None]:
        """The teacher's LoRA tensors in place of the student's, in eval mode. The parameters'
        storage is swapped, not overwritten, so the student's autograd graph (which holds the
        student's tensors) is untouched; everything is restored on exit."""
        params = dict(self.model.named_parameters())
        kept = {n: params[n].data for n in self.teacher}
        training = self.model.training
        try:
            for n, tensor in self.teacher.items():
                params[n].data = tensor
            self.model.eval()
            yield
        finally:
            for n, tensor in kept.items():
                params[n].data = tensor
            self.model.train(training)

    def extra_losses(
        self, batch: dict[str, torch.Tensor], logits: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        if not self.teacher or self.weight == 0:
            return {"lwf": torch.zeros((), device=logits.device)}
        with torch.no_grad(), self.teacher_weights():
            teacher = task_logits(self.model, batch)
        loss = distillation_loss(logits, teacher, targets != IGNORE, self.temperature)
        return {"lwf": self.weight * loss}

    def after_stage(self, stage: int, domain: str) -> None:
        super().after_stage(stage, domain)
        self.remember_teacher()

    def load(self, directory: Path, trained: list[str]) -> None:
        super().load(directory, trained)
        self.remember_teacher()
