"""Checks of the settings of the baseline methods (replay, ewc, lwf, olora): a value that
cannot work fails with a ConfigError naming the key and the fix, before any model work."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig

from continual.errors import ConfigError


def number(
    cfg: DictConfig, key: str, low: float, high: float = math.inf, integer: bool = False
) -> Any:
    """``cfg[key]`` (``key`` dotted, e.g. ``replay.memory_size``) as a number in
    ``[low, high]``; an int when ``integer``."""
    section, name = key.rsplit(".", 1)
    value = cfg[section].get(name) if section in cfg else None
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        bounds = f">= {low}" if high == math.inf else f"in [{low}, {high}]"
        what = "an integer" if integer else "a finite number"
        raise ConfigError(f"method.{key}={value!r} must be {what} {bounds}; fix `method.{key}`.")
    if not math.isfinite(value):
        raise ConfigError(f"method.{key}={value!r} must be finite; fix `method.{key}`.")
    return int(value) if integer else float(value)


def no_crma(name: str, cfg: DictConfig) -> None:
    """The baselines run on plain LoRA: a CRMA backbone beside them is refused."""
    if "crma" in cfg:
        raise ConfigError(
            f"method={name} runs on plain LoRA; combining it with a CRMA backbone is not "
            "supported. Drop the `method.crma` settings, or use method=crma / modular_crma."
        )
