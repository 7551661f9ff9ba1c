"""O-LoRA (Wang et al. 2023, "Orthogonal Subspace Learning for Language Model Continual
Learning", EMNLP Findings): a new LoRA per domain, trained while the earlier (frozen) adapters
stay active, with a loss that keeps the new adapter's subspace orthogonal to theirs."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from peft.tuners.lora import LoraLayer

from continual.errors import ConfigError
from continual.methods.lora import PerDomainLoRA
from continual.methods.lora_init import rewrites_base
from continual.methods.settings import no_crma, number


def owned(name: str, adapter: str) -> bool:
    """Whether parameter ``name`` is a LoRA weight of ``adapter``."""
    return f"lora_A.{adapter}." in name or f"lora_B.{adapter}." in name


def lora_pairs(
    model: torch.nn.Module, new: str, earlier: list[str]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per LoRA layer, ``(A_new, A_i)`` for every earlier adapter i: the ``lora_A`` weights
    (shape ``r x d_in``) of the new adapter and of adapter i."""
    pairs = []
    for module in model.modules():
        if isinstance(module, LoraLayer) and new in module.lora_A:
            for name in earlier:
                if name in module.lora_A:
                    pairs.append((module.lora_A[new].weight, module.lora_A[name].weight))
    return pairs


def orthogonality_loss(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """``sum over pairs of sum_jk |(A_new A_i^T)_jk|`` (float32): zero exactly when every
    row of each ``A_new`` is orthogonal to every row of the earlier ``A_i``."""
    terms = [(new.float() @ old.float().T).abs().sum() for new, old in pairs]
    return torch.stack(terms).sum() if terms else torch.zeros(())


class OLoRA(PerDomainLoRA):
    """O-LoRA: a fresh peft LoRA per domain on the frozen base; the earlier adapters stay
    active (frozen), so training and serving use the sum of all adapters trained so far (every
    domain is served by that one model; before stage 1, by the base). Added to the task loss:
    ``lambda_orth * sum_i sum |A_new A_i^T|`` over the earlier adapters i and every LoRA layer
    (``loss_orth``), and ``lambda_l2 * ||new adapter weights||^2`` (``loss_l2``; the reference
    code adds the unsquared norm of each matrix instead).

    The orthogonality loss is on ``lora_A`` (peft's ``r x d_in`` down-projection), as in the
    reference code (cmnfriend/O-LoRA), although the paper's notation puts it on the matrix
    peft calls ``lora_B``: the rows of ``A`` span the input subspace an adapter reads, so
    orthogonal ``A``'s make the new update ``B_new A_new x`` vanish on inputs x inside the
    earlier adapters' subspaces, and the earlier adapters read nothing of the new subspace.
    """

    def __init__(self, name: str, **settings: Any) -> None:
        super().__init__(name, **settings)
        no_crma(name, self.cfg)
        self.lambda_orth = number(self.cfg, "olora.lambda_orth", 0.0)
        self.lambda_l2 = number(self.cfg, "olora.lambda_l2", 0.0)
        init = self.cfg.lora.get("init", "default")
        if rewrites_base(init):
            raise ConfigError(
                f"method={name} with method.lora.init={init}: that init rewrites the base "
                "weights under every earlier adapter; use method.lora.init=default (or gaussian)."
            )
        self.current: str | None = None

    def activate(self, names: list[str]) -> None:
        """Make ``names`` the active adapters (their sum is the model) and freeze all but the
        one being trained (``self.current``)."""
        self.model.base_model.set_adapter(names)
        for name, param in self.model.named_parameters():
            if "lora_" in name:
                param.requires_grad_(self.current is not None and owned(name, self.current))

    def before_stage(self, stage: int, domain: str) -> None:
        self._add_adapter(domain)
        self.current = domain
        self.activate([*self.trained, domain])

    def after_stage(self, stage: int, domain: str) -> None:
        super().after_stage(stage, domain)  # records and freezes the adapter
        self.current = None
        self.activate(self.trained)

    def serving(self, domain: str) -> AbstractContextManager[None]:
        """Every domain: the sum of all adapters trained so far (the base before stage 1)."""
        return contextlib.nullcontext()

    def extra_losses(
        self, batch: dict[str, torch.Tensor], logits: torch.Tensor | None,
        targets: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        if self.current is None:
            return {}
        orth = orthogonality_loss(lora_pairs(self.model, self.current, self.trained))
        new = [p for n, p in self.model.named_parameters() if owned(n, self.current)]
        l2 = sum(p.float().pow(2).sum() for p in new)
        return {"orth": self.lambda_orth * orth.to(new[0].device), "l2": self.lambda_l2 * l2}

    def load(self, directory: Path, trained: list[str]) -> None:
        super().load(directory, trained)
        self.current = None
        self.activate(self.trained)
