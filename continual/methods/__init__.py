"""Continual-learning protocols (``method=`` choices)."""

from continual.methods import lora  # noqa: F401  (registers lora, frozen_lora)
from continual.methods.base import METHODS, Method, build_method

__all__ = ["METHODS", "Method", "build_method"]
