"""LoRA protocols built on ``peft``: one adapter through every stage, or a fresh one per domain."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

from continual.methods.base import Method
from continual.methods.lora_init import BaseRestorer, peft_init, rewrites_base


def lora_config(cfg: DictConfig) -> LoraConfig:
    """peft LoraConfig from ``method.lora`` (r, alpha, dropout, target_modules, init: see
    :mod:`continual.methods.lora_init`)."""
    targets = cfg.target_modules
    if not isinstance(targets, str):
        targets = list(OmegaConf.to_container(targets))
    return LoraConfig(
        r=int(cfg.r),
        lora_alpha=float(cfg.alpha),
        lora_dropout=float(cfg.dropout),
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
        init_lora_weights=peft_init(cfg.get("init", "default")),
    )


def _prepare_base(model: torch.nn.Module) -> torch.nn.Module:
    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


class LoRAMethod(Method):
    """Base of the LoRA protocols: the trainable LoRA weights form one group named ``lora``
    (the training loop logs that group's gradient norm on its own)."""

    def param_groups(self, lr: float) -> list[dict]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return [{"name": "lora", "params": params, "lr": lr}]


class SequentialLoRA(LoRAMethod):
    """NAIVE: one LoRA adapter trained sequentially through every stage (serves every domain)."""

    adapter = "sequential"

    def setup(self, model: torch.nn.Module) -> torch.nn.Module:
        self.model = get_peft_model(_prepare_base(model), lora_config(self.cfg.lora), self.adapter)
        return self.model

    def save(self, directory: Path) -> None:
        self.model.save_pretrained(directory, safe_serialization=True)

    def load(self, directory: Path, trained: list[str]) -> None:
        self.model.load_adapter(directory / self.adapter, self.adapter, is_trainable=True)
        self.model.set_adapter(self.adapter)
        self.trained = list(trained)


class PerDomainLoRA(LoRAMethod):
    """FROZEN: a fresh LoRA per domain on the frozen base; domain i is served by adapter i.

    A domain not trained yet is served by the base model (adapters disabled).
    """

    def setup(self, model: torch.nn.Module) -> torch.nn.Module:
        self.base = _prepare_base(model)
        self.model = self.base
        rewrites = rewrites_base(self.cfg.lora.get("init", "default"))
        self.restorer = BaseRestorer(self.base) if rewrites else None
        return self.model

    def _add_adapter(self, domain: str) -> None:
        config = lora_config(self.cfg.lora)
        if isinstance(self.model, PeftModel):
            with warnings.catch_warnings():  # earlier PiSSA adapters are already folded into
                warnings.filterwarnings("ignore", "PiSSA changes the base weights")  # plain LoRA
                self.model.add_adapter(domain, config)
        else:
            self.model = get_peft_model(self.base, config, domain)
        self.model.set_adapter(domain)

    def before_stage(self, stage: int, domain: str) -> None:
        self._add_adapter(domain)
        if self.restorer is not None:  # PiSSA/OLoRA: the base now holds this adapter's residual
            self.restorer.remember_initial(self.model, domain)

    def after_stage(self, stage: int, domain: str) -> None:
        super().after_stage(stage, domain)
        if self.restorer is not None:  # back to the original base + a plain LoRA of it
            self.restorer.fold(self.model, domain)
        for name, param in self.model.named_parameters():
            if f".{domain}." in name:
                param.requires_grad_(False)

    @contextlib.contextmanager
    def serving(self, domain: str) -> Iterator[None]:
        if domain in self.trained:
            self.model.set_adapter(domain)
            yield
        elif isinstance(self.model, PeftModel):
            with self.model.disable_adapter():
                yield
        else:
            yield

    def save(self, directory: Path) -> None:
        self.model.save_pretrained(
            directory, safe_serialization=True, selected_adapters=self.trained
        )

    def load(self, directory: Path, trained: list[str]) -> None:
        for domain in trained:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(directory / domain, domain, is_trainable=False)
            else:
                self.model = PeftModel.from_pretrained(self.base, directory / domain, domain)
        self.trained = list(trained)
