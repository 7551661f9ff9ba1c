"""Gradient clipping of a training stage: global norm, or ZClip (the ``zclip`` package).

* ``train.clipping: norm`` - scale the gradients so that their global L2 norm is at most
  ``train.max_grad_norm`` (``torch.nn.utils.clip_grad_norm_``; 0 disables clipping).
* ``train.clipping: zclip`` - ZClip (Kumar et al. 2025, "ZClip: Adaptive Spike Mitigation for
  LLM Pre-Training"): an exponential moving average of the norm's mean and variance; a step
  whose norm has z-score above ``z_thresh`` is clipped to ``mean + z_thresh * std / (z /
  z_thresh)`` (``adaptive_scaling``) or to the mean (``mean``); the first ``warmup_steps`` steps
  only collect statistics (and are clipped at ``max_grad_norm``); ``max_grad_norm`` also caps
  every later step (0: no cap). One ZClip per stage: its statistics restart with every domain,
  whose gradient scale differs, and a resumed run rebuilds exactly the same state.

Both return the global norm *before* clipping, which the stage logs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from continual.errors import ConfigError

Clipper = Callable[[Sequence[torch.nn.Parameter]], float]
MODES = ("norm", "zclip")


def group_norm(params: Sequence[torch.nn.Parameter]) -> float:
    """Global L2 norm of the gradients of ``params`` (parameters without a gradient count 0)."""
    norms = [p.grad.detach().norm(2) for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def build_clipper(cfg: Any) -> Clipper:
    """A fresh clipper for one stage from ``train`` (``clipping``, ``max_grad_norm``,
    ``zclip``); raises ConfigError for an unknown mode or ZClip setting."""
    mode = cfg.get("clipping", "norm")
    max_norm = float(cfg.max_grad_norm) if cfg.max_grad_norm and cfg.max_grad_norm > 0 else 0.0
    if mode == "norm":
        limit = max_norm or math.inf
        return lambda params: float(torch.nn.utils.clip_grad_norm_(params, limit))
    if mode != "zclip":
        raise ConfigError(f"train.clipping={mode!r} is not one of {', '.join(MODES)}")
    from zclip import ZClip

    settings = dict(cfg.get("zclip") or {})
    try:
        zclip = ZClip(max_grad_norm=max_norm or None, **settings)
    except (TypeError, AssertionError, ValueError) as exc:
        raise ConfigError(
            f"train.zclip {settings} is not a valid ZClip configuration ({exc}); keys: alpha, "
            "z_thresh, warmup_steps, mode (zscore|percentile), clip_option "
            "(adaptive_scaling|mean), clip_factor, eps, skip_update_on_spike"
        ) from exc

    def clip(params: Sequence[torch.nn.Parameter]) -> float:
        return float(zclip.step(torch.nn.ParameterList(params)))

    return clip
