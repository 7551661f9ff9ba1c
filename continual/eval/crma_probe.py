"""Does the CRMA branch carry any of the fit? Residual size and bypass effect.

Definitions (per evaluated domain, after stage 0 and every stage, for methods with a CRMA
backbone; the bypass values are computed in :func:`continual.eval.suite.evaluate_all`):

* ``crma_bypass_nll``: the domain's holdout NLL with the CRMA branch switched off minus with it
  on, the rest of the served model unchanged (nats; > 0: the branch lowers the loss, so it
  carries part of the fit). Text domains: the holdout blocks; pairs: the response-only NLL.
* ``crma_bypass_accuracy`` (pairs domains): accuracy with the branch on minus off (a fraction;
  > 0: the branch helps).
* ``crma_residual_ratio``: the mean over tokens and adapted layers of
  ``||g W_write M W_read h|| / ||h||``, h the decoder block's output before CRMA, on the first
  evaluation batch of the domain's holdout (padding excluded); ``crma_residual_ratio_early``,
  ``_middle`` and ``_late`` average the same over the first, second and last third of the layers.

An untrained CRMA (``write`` = 0) gives exactly 0 for all of them. A run whose bypass on the
domain just trained stays below ``eval.crma_inert_nats`` after every stage is reported as
"CRMA inert": its branch did not matter, so it is not a test of the constrained adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from continual.adapters.crma import CRMA

GROUPS = ("early", "middle", "late")


def layer_groups(layers: Sequence[int]) -> dict[str, list[int]]:
    """The adapted layer indices split into three contiguous, near-equal groups (numpy's
    ``array_split``: earlier groups take the remainder); a group may be empty."""
    parts = np.array_split(np.asarray(list(layers), dtype=int), len(GROUPS))
    return {name: [int(i) for i in part] for name, part in zip(GROUPS, parts, strict=True)}


def mean_ratio(records: list[torch.Tensor], mask: torch.Tensor | None) -> float:
    """Mean of the recorded per-token ratios over the tokens where ``mask`` is 1 (all tokens
    when ``mask`` is None); ``records`` holds one (batch, length) tensor per forward."""
    total, count = 0.0, 0
    for ratios in records:
        weights = torch.ones_like(ratios) if mask is None else mask.to(ratios.dtype).cpu()
        total += float((ratios * weights).sum())
        count += float(weights.sum())
    return total / count if count else float("nan")


@torch.inference_mode()
def residual_ratios(
    model: Any, crma: CRMA, batch: dict[str, torch.Tensor], device: torch.device
) -> dict[str, float]:
    """``crma_residual_ratio`` (mean over layers) and its ``_early/_middle/_late`` group means
    for one forward pass over ``batch`` (``input_ids`` and, for padded batches,
    ``attention_mask``) under the model as currently served."""
    mask = batch.get("attention_mask")
    inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    was_training = model.training
    model.eval()
    with crma.probing() as records:
        model(**inputs, use_cache=False)
    model.train(was_training)
    per_layer = {i: mean_ratio(r, mask) for i, r in records.items()}
    values = {"crma_residual_ratio": float(np.mean(list(per_layer.values())))}
    for name, layers in layer_groups(crma.layer_indices).items():
        if layers:
            values[f"crma_residual_ratio_{name}"] = float(np.mean([per_layer[i] for i in layers]))
    return values


def bypass_effects(on: dict[str, float], off: dict[str, float]) -> dict[str, float]:
    """``crma_bypass_nll`` (off - on) and, when accuracy was scored, ``crma_bypass_accuracy``
    (on - off) from one domain's scores with the branch on and off."""
    values = {"crma_bypass_nll": off["holdout_nll"] - on["holdout_nll"]}
    if "accuracy" in on:
        values["crma_bypass_accuracy"] = on["accuracy"] - off["accuracy"]
    return values


def probe_batch(domain: Any, batch_size: int) -> dict[str, torch.Tensor]:
    """The first evaluation batch of a domain's holdout: text blocks, or padded pairs."""
    if domain.kind == "pairs":
        encoded = domain.holdout_encoded
        return encoded.batch(range(min(batch_size, len(encoded))))
    return {"input_ids": domain.holdout_blocks[:batch_size]}


def is_inert(own_bypass_nll: Sequence[float], threshold: float) -> bool:
    """True when the bypass effect on the domain just trained stayed below ``threshold`` nats
    after every stage (``own_bypass_nll``: one value per stage)."""
    return all(abs(v) < threshold for v in own_bypass_nll)


def bypass_summary(bypass: Any, order: Sequence[str], threshold: float) -> dict[str, float]:
    """Chain summary from the stage x domain matrix of ``crma_bypass_nll`` (a DataFrame indexed
    by stage 0..K): ``crma_bypass_own_nll`` is the mean over stages k >= 1 of the bypass on the
    domain trained at stage k, ``crma_bypass_own_nll_min`` its smallest value, and
    ``crma_inert`` is 1.0 when :func:`is_inert` holds for ``threshold``, else 0.0."""
    own = [float(bypass.loc[k, d]) for k, d in enumerate(order, start=1)]
    return {
        "crma_bypass_own_nll": float(np.mean(own)),
        "crma_bypass_own_nll_min": float(min(own)),
        "crma_inert": float(is_inert(own, threshold)),
    }
