"""Continual-learning protocols (``method=`` choices, each built from its ``_target_``):
lora, frozen_lora, crma, modular_crma, and the baselines replay, ewc, lwf, olora, joint."""

from continual.methods.base import Method, build_method

__all__ = ["Method", "build_method"]
