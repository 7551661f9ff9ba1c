"""Methods are continual-learning protocols with lifecycle hooks (Avalanche-style plugins).

A run calls ``setup`` once and ``bind`` once (the run's data, device, train config and seed),
then for each of the ``stages`` it makes of the sequence (one per domain unless a method says
otherwise) ``before_stage`` -> train on ``param_groups`` for ``stage_steps`` steps with batches
from ``training_set`` and the task loss plus ``extra_losses`` -> ``after_stage``; every evaluation
of domain d happens inside ``serving(d)``, which activates the model that a protocol deploys
for d (for example adapter i for domain i). A method overrides only the hooks it needs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from continual.errors import ConfigError


def build_method(cfg: DictConfig) -> Method:
    """Instantiate the protocol of a ``method`` config group entry (its ``_target_`` class)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(cfg, _convert_="none")
    except InstantiationException as exc:
        if isinstance(exc.__cause__, ConfigError):  # the method's own check: its message
            raise exc.__cause__ from None
        raise ConfigError(
            f"method {cfg.get('name')!r} cannot be built from _target_={cfg.get('_target_')!r} "
            f"({exc}); choose a method from conf/method/, or point `method._target_` at an "
            "importable continual.methods.base.Method subclass."
        ) from exc


class Method:
    """Base protocol; subclasses override the hooks they need."""

    # Whether ``extra_losses`` reads its ``logits`` / ``targets`` arguments. A method whose
    # terms do not (a weight penalty) leaves this False, so that the training loop may run the
    # text loss in chunks (``train.loss_chunk_tokens``) and pass ``None`` for both.
    extra_losses_use_logits = False

    def __init__(self, name: str, **settings: Any) -> None:
        """``name`` and the settings of the ``method`` config entry (``lora``, ``crma``, ...)."""
        self.name = name
        self.cfg = OmegaConf.create(settings)
        self.model: Any = None
        self.trained: list[str] = []  # domains whose stage has finished, in order
        self.data: dict[str, Any] = {}  # the run's context, given by ``bind``
        self.device = torch.device("cpu")
        self.train_cfg: DictConfig = OmegaConf.create({})
        self.seed = 0

    def bind(
        self, data: Mapping[str, Any], device: torch.device, train: DictConfig, seed: int
    ) -> None:
        """Give the hooks the run's context once, after ``setup``: every domain's data
        (``DomainData`` or ``PairsDomain``), the device, the ``train`` config and the seed."""
        self.data, self.device, self.train_cfg, self.seed = dict(data), device, train, seed

    def setup(self, model: torch.nn.Module) -> torch.nn.Module:
        """Wrap the frozen base model once, before stage 0 is evaluated; return what to run."""
        self.model = model
        return model

    def stages(self, order: list[str]) -> list[str]:
        """The names of the stages a run trains, in order, made from the sequence's domains:
        one stage per domain (a chain) by default. A name labels its stage's metric rows,
        adapters directory and progress record, and is the ``domain`` the stage hooks get; a
        method that trains otherwise (``joint``: one stage on every domain) returns its own."""
        return list(order)

    def stage_steps(self, stage: int, domain: str) -> int | None:
        """Optimizer steps of a stage; ``None``: the loop's own count (``train.steps``, or
        ``train.epochs`` passes over the stage's training set)."""
        return None

    def before_stage(self, stage: int, domain: str) -> None:
        """Prepare the trainable state for ``domain`` (called after the stage's seeding)."""

    def param_groups(self, lr: float) -> list[dict]:
        """AdamW parameter groups for the current stage."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr}]

    def training_set(self, stage: int, domain: str) -> Any:
        """What stage ``stage`` draws its batches from (a ``TrainingSet``): the domain's own
        training set unless a method composes another (e.g. replay mixes in a memory)."""
        return self.data[domain].training_set()

    def extra_losses(
        self, batch: dict[str, torch.Tensor], logits: torch.Tensor | None,
        targets: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """Loss terms added to the task loss of a training micro-batch (name -> scalar tensor,
        each logged as ``loss_<name>``): see :data:`continual.train.loop.ExtraLosses`."""
        return {}

    def after_stage(self, stage: int, domain: str) -> None:
        """Freeze or record what the stage produced (the bound data and device are at hand,
        e.g. to estimate a Fisher on the stage's training set)."""
        self.trained.append(domain)

    def serving(self, domain: str) -> AbstractContextManager[None]:
        """Context in which the model answers for ``domain``."""
        return contextlib.nullcontext()

    def save(self, directory: Path) -> None:
        """Write the trainable state (safetensors + config) after a stage."""
        raise NotImplementedError

    def load(self, directory: Path, trained: list[str]) -> None:
        """Restore the state written by ``save`` after the stages that trained ``trained``."""
        raise NotImplementedError

    def beside(self) -> list[torch.nn.Module]:
        """Trainable modules that run beside the model by hooks, not inside it (CRMA): in
        multi-process training DDP wraps them with the model, so their gradients are averaged."""
        return []

    def shared_tensors(self) -> list[torch.Tensor]:
        """Extra state computed after a stage (EWC's Fisher and anchor) that every process must
        hold identically: in multi-process training rank 0's is broadcast after ``after_stage``."""
        return []

    def diagnostics(self) -> dict[str, float]:
        """Scalar health checks logged at each evaluation (e.g. constraint residuals)."""
        return {}
