"""Protocols with the constrained adapter (CRMA): LoRA + CRMA, and modular per-domain LoRA +
a shared CRMA backbone (the vendor's MODULAR condition)."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from continual.adapters.crma import CRMA, CRMAConfig, load_crma, save_crma
from continual.methods.lora import PerDomainLoRA, SequentialLoRA

BACKBONE_DIR = "crma"


class _Backbone:
    """Mixin (put it first in the bases): adds a CRMA backbone to a LoRA protocol. The backbone is
    attached at setup, trained in every stage beside the protocol's LoRA, and saved with it."""

    cfg: DictConfig
    crma: CRMA

    def setup(self, model: torch.nn.Module) -> torch.nn.Module:
        model = super().setup(model)  # type: ignore[misc]
        config = CRMAConfig.from_dict(OmegaConf.to_container(self.cfg.crma, resolve=True))
        self.crma = CRMA.from_model(model, config)
        self.crma.attach(model)
        return model

    def param_groups(self, lr: float) -> list[dict]:
        return super().param_groups(lr) + self.crma.parameter_groups(lr)  # type: ignore[misc]

    def beside(self) -> list[torch.nn.Module]:
        return [*super().beside(), self.crma]  # type: ignore[misc]

    def save(self, directory: Path) -> None:
        super().save(directory)  # type: ignore[misc]
        save_crma(self.crma, directory / BACKBONE_DIR)

    def load(self, directory: Path, trained: list[str]) -> None:
        super().load(directory, trained)  # type: ignore[misc]
        self.crma.load_state_dict(load_crma(directory / BACKBONE_DIR).state_dict())

    def diagnostics(self) -> dict[str, float]:
        """Constraint health of the mixing matrices (worst layer) and the mean gate."""
        report = self.crma.constraint_report()
        gates = [float(b._log_alpha.detach().exp()) for b in self.crma.blocks]
        return {
            "crma_row_sum_err": report["max_row_err"],
            "crma_col_sum_err": report["max_col_err"],
            "crma_spectral_norm": report["spectral_norm"],
            "crma_gate_mean": sum(gates) / len(gates),
        }


class SequentialLoRAWithCRMA(_Backbone, SequentialLoRA):
    """One LoRA + one CRMA, both trained sequentially through every stage."""


class ModularCRMA(_Backbone, PerDomainLoRA):
    """MODULAR: a fresh LoRA per domain plus one shared CRMA backbone trained in every stage.

    Adapter i is frozen after stage i; domain i is always served by adapter i under the *current*
    backbone (a domain not trained yet: the base plus the current backbone), so re-evaluating
    domain i after later stages measures backbone drift.
    """
