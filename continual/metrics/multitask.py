"""Summaries of a multi-task run, which trains every domain at once in one stage (e.g.
``method=joint``, the usual upper bound of a continual chain), not one domain per stage.

Only the numbers that need no chain are computed, at the last stage ``T`` (the largest stage of
the matrix): final losses and general retention (:func:`multitask_summary`), final accuracies
(:func:`multitask_accuracy_summary`). No domain is trained before another, so nothing can be
forgotten: the run-level metrics that need a chain (:data:`CHAIN_METRICS`,
:data:`ACC_CHAIN_METRICS`: average forgetting, delta NLL, max forgetting, BWT, FWT) are NaN, so
that a comparison shows them as not computed, and their per-domain keys are absent. The names
are those of :func:`continual.metrics.summary_metrics` and
:func:`continual.metrics.accuracy_summary`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from continual.metrics.accuracy import _mean, _stages
from continual.metrics.matrix import (
    _check_order,
    _nanmean,
    _stage_index,
    general_retention_pct,
    loss_matrix,
)

__all__ = ["ACC_CHAIN_METRICS", "CHAIN_METRICS", "multitask_accuracy_summary", "multitask_summary"]

# run-level metrics that need a chain (a domain trained before another): NaN for a multi-task run
CHAIN_METRICS = ("avg_forgetting_pct", "avg_delta_nll", "avg_max_forgetting", "bwt", "fwt")
ACC_CHAIN_METRICS = ("acc_avg_forgetting_pts", "acc_avg_forgetting_pct",
                     "acc_avg_max_forgetting_pts", "acc_bwt", "acc_fwt")  # fmt: skip


def multitask_summary(
    L: pd.DataFrame, domains: Sequence[str], general: str | None = "general"
) -> dict[str, float]:
    """Summary of a multi-task run (every domain trained at once, e.g. ``method=joint``): the
    keys of :func:`~continual.metrics.summary_metrics` that need no chain, read at the last
    stage ``T`` (the largest index of ``L``): ``final_avg_loss``, ``final_loss/<d>`` and,
    unless ``general`` is None, ``general_retention_pct_final`` and ``general_loss_final``.

    No domain is trained before another, so nothing can be forgotten: the run-level
    :data:`CHAIN_METRICS` (average forgetting, delta NLL and max forgetting, BWT, FWT) are NaN
    (so that a comparison shows them as not computed) and the per-domain ``forgetting_pct/<d>``,
    ``delta_nll/<d>`` and ``max_forgetting/<d>`` are absent.
    """
    names = _check_order(domains)
    df = _stage_index(L) if isinstance(L, pd.DataFrame) else loss_matrix(L, names)
    missing = [d for d in names if d not in df.columns]
    if missing:
        raise ValueError(f"loss matrix lacks domain column(s) {missing}; has {list(df.columns)}")
    T = int(df.index.max())
    out: dict[str, float] = {name: float("nan") for name in CHAIN_METRICS}
    out["final_avg_loss"] = _nanmean([df.at[T, d] for d in names])
    if general is not None:
        known = general in df.columns
        retention = general_retention_pct(df, general).loc[T] if known else float("nan")
        out["general_retention_pct_final"] = float(retention)
        out["general_loss_final"] = float(df.at[T, general]) if known else float("nan")
    for d in names:
        out[f"final_loss/{d}"] = float(df.at[T, d])
    return out


def multitask_accuracy_summary(A: pd.DataFrame, domains: Sequence[str]) -> dict[str, float]:
    """:func:`~continual.metrics.accuracy_summary` of a multi-task run (every domain trained at
    once): at the last stage ``T`` (the largest index of ``A``), ``final_avg_accuracy`` and
    ``final_accuracy/<d>`` (points) of the domains with an accuracy; :data:`ACC_CHAIN_METRICS`
    (forgetting, BWT, FWT) are NaN, their per-domain keys absent. Empty when no domain has an
    accuracy."""
    domains = _check_order(domains)
    T = len(A) - 1
    A = _stages(A, T)
    trained = [d for d in domains if d in A.columns]
    if not trained:
        return {}
    out: dict[str, float] = {name: float("nan") for name in ACC_CHAIN_METRICS}
    out["final_avg_accuracy"] = _mean([100.0 * A.at[T, d] for d in trained])
    for d in trained:
        out[f"final_accuracy/{d}"] = float(100.0 * A.at[T, d])
    return out
