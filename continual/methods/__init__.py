"""Continual-learning protocols (``method=`` choices): lora, frozen_lora, crma, modular_crma."""

from continual.methods import crma, lora  # noqa: F401  (register the protocols)
from continual.methods.base import METHODS, Method, build_method

__all__ = ["METHODS", "Method", "build_method"]
