"""Continual-learning metrics over the stage x domain *accuracy* matrix (higher = better).

``A`` is laid out like the loss matrix of :mod:`continual.metrics.matrix` (index: stage
``0..T``; columns: domains; ``A.loc[k, d]`` the task accuracy of domain ``d``, a fraction in
[0, 1], after stage ``k``) but may hold only the domains that have an accuracy (``pairs``
domains); ``order`` is the full trained sequence and metrics cover the domains of ``order``
that are columns of ``A``. With ``s(d)`` the stage that trains ``d`` and ``T`` the last stage,
for every such domain trained before the last stage:

* forgetting in points: ``100 (A[s(d)][d] - A[T][d])`` (positive = forgot);
* forgetting in %: ``100 (A[s(d)][d] - A[T][d]) / A[s(d)][d]`` (positive = forgot; NaN when
  ``A[s(d)][d] = 0``, and such a domain is left out of the average % while it stays in every
  average in points);
* max forgetting (Chaudhry et al. 2018) in points: ``100 (max_{s(d) <= l < T} A[l][d] - A[T][d])``;
* BWT (Lopez-Paz & Ranzato 2017) in points: ``100 mean_d (A[T][d] - A[s(d)][d])``
  (NEGATIVE = forgetting);
* FWT in points: ``100 mean (A[s(d)-1][d] - A[0][d])`` over domains not trained first
  (positive = earlier stages helped; stage 0 stands in for GEM's random-init baseline);
* final average accuracy (ACC) in points: ``100 mean_d A[T][d]`` over every trained domain.

Missing entries (NaN) propagate into the numbers that need them, as for the loss matrix; the
max in max forgetting skips them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from continual.metrics.matrix import _check_order

__all__ = ["accuracy_forgetting_table", "accuracy_summary"]


def _stages(A: pd.DataFrame, T: int) -> pd.DataFrame:
    """``A`` with an integer stage index ``0..T`` in order and float values, or ValueError."""
    if not isinstance(A, pd.DataFrame):
        raise ValueError(f"accuracy matrix must be a pandas DataFrame, got {type(A).__name__}")
    try:
        stages = [int(k) for k in A.index]
        exact = all(float(k) == s for k, s in zip(A.index, stages, strict=True))
    except (TypeError, ValueError):
        exact = False
    if not exact or len(set(stages)) != len(stages):
        raise ValueError(
            f"accuracy matrix index must be distinct integer stages 0..{T}, got {list(A.index)}"
        )
    missing = [k for k in range(T + 1) if k not in stages]
    if missing:
        raise ValueError(f"accuracy matrix lacks stage row(s) {missing} (need 0..{T})")
    extra = [k for k in stages if not 0 <= k <= T]
    if extra:
        raise ValueError(f"accuracy matrix has stage row(s) {extra} outside 0..{T}")
    out = A.copy()
    out.index = pd.Index(stages, name="stage")
    return out.astype(float).sort_index()


def _trained(A: pd.DataFrame, order: Sequence[str]) -> list[tuple[int, str]]:
    """``(s(d), d)`` for the domains of ``order`` that have an accuracy column."""
    return [(s, d) for s, d in enumerate(order, start=1) if d in A.columns]


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def accuracy_forgetting_table(A: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """One row per domain with an accuracy trained before the last stage: ``domain``,
    ``trained_at_stage``, ``acc_after_own_stage``, ``acc_final`` (fractions),
    ``forgetting_pts``, ``forgetting_pct``, ``max_forgetting_pts`` (see the module docstring).

    ``A``: stage x domain accuracy fractions, index the stages ``0..T`` (any row order);
    ``order``: the trained sequence of length ``T``. Raises ValueError for a malformed matrix or
    an order that repeats a domain."""
    order = _check_order(order)
    T = len(order)
    A = _stages(A, T)
    rows = []
    for s, d in _trained(A, order):
        if s == T:
            continue
        own, final = float(A.at[s, d]), float(A.at[T, d])
        best = float(A.loc[s : T - 1, d].max())
        rows.append({
            "domain": d, "trained_at_stage": s, "acc_after_own_stage": own, "acc_final": final,
            "forgetting_pts": 100.0 * (own - final),
            "forgetting_pct": 100.0 * (own - final) / own if own > 0 else float("nan"),
            "max_forgetting_pts": 100.0 * (best - final),
        })  # fmt: skip
    columns = ["domain", "trained_at_stage", "acc_after_own_stage", "acc_final",
               "forgetting_pts", "forgetting_pct", "max_forgetting_pts"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def accuracy_summary(A: pd.DataFrame, order: Sequence[str]) -> dict[str, float]:
    """Flat scalar metrics with stable names (points unless noted):

    ``acc_avg_forgetting_pts``, ``acc_avg_forgetting_pct`` (%), ``acc_avg_max_forgetting_pts``,
    ``acc_bwt``, ``acc_fwt``, ``final_avg_accuracy``; per domain ``acc_forgetting_pts/<d>``,
    ``acc_forgetting_pct/<d>``, ``acc_max_forgetting_pts/<d>`` (trained before the last stage)
    and ``final_accuracy/<d>`` (every trained domain with an accuracy, in points). Empty when no
    trained domain has an accuracy. ``acc_avg_forgetting_pct`` averages the domains whose % is
    defined (a non-zero accuracy after the own stage); every other average covers all of them.
    """
    order = _check_order(order)
    T = len(order)
    A = _stages(A, T)
    trained = _trained(A, order)
    if not trained:
        return {}
    table = accuracy_forgetting_table(A, order)
    defined = table[table["acc_after_own_stage"] != 0]  # % of a zero accuracy is undefined
    out: dict[str, float] = {
        "acc_avg_forgetting_pts": _mean(table["forgetting_pts"].tolist()),
        "acc_avg_forgetting_pct": _mean(defined["forgetting_pct"].tolist()),
        "acc_avg_max_forgetting_pts": _mean(table["max_forgetting_pts"].tolist()),
        "acc_bwt": -_mean(table["forgetting_pts"].tolist()),
        "acc_fwt": _mean([100.0 * (A.at[s - 1, d] - A.at[0, d]) for s, d in trained if s >= 2]),
        "final_avg_accuracy": _mean([100.0 * A.at[T, d] for _, d in trained]),
    }
    for row in table.itertuples():
        out[f"acc_forgetting_pts/{row.domain}"] = float(row.forgetting_pts)
        out[f"acc_forgetting_pct/{row.domain}"] = float(row.forgetting_pct)
        out[f"acc_max_forgetting_pts/{row.domain}"] = float(row.max_forgetting_pts)
    for _, d in trained:
        out[f"final_accuracy/{d}"] = float(100.0 * A.at[T, d])
    return out
