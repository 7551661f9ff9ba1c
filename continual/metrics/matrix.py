"""Continual-learning metrics over the stage x domain loss matrix (pure functions, no I/O).

Conventions (see ``shared/research/published-numbers.md``, "Metric definitions"):

* ``L`` is the loss matrix: a :class:`pandas.DataFrame` whose index is the stage ``0..T``
  (stage 0 = before any training, stage ``k`` = after training the ``k``-th domain of the
  sequence) and whose columns are evaluated domain names. ``L.loc[k, d]`` is the holdout mean
  token NLL (nats) of the model deployed for domain ``d`` after stage ``k``. A 2-D numpy array
  is accepted too; its columns are then taken to be ``order`` (use :func:`loss_matrix` to label
  an array with other or extra columns).
* ``order`` is the trained sequence (length ``T``): domain ``order[i - 1]`` is trained at stage
  ``i``, written ``s(d)``. Extra columns (e.g. ``"general"``, a holdout-only domain) may exist.
* Sign: positive forgetting / drift = worse (the loss went up), except for the
  literature metrics BWT and FWT, which keep their published sign (higher = better).
* NaN entries propagate: a metric that needs a missing entry is NaN.

Metrics defined here (``d`` ranges over the domains trained before the last stage):

* forgetting % (vendor definition): ``100 (L[T][d] - L[s(d)][d]) / L[s(d)][d]``
  (:func:`forgetting_pct`, averaged by :func:`average_forgetting_pct`); the same number read
  for modular methods is the backbone drift (:func:`backbone_drift_pct`);
* delta NLL: ``L[T][d] - L[s(d)][d]`` in nats (:func:`forgetting_abs`);
* max forgetting (Chaudhry et al. 2018, on losses): ``L[T][d] - min_{s(d) <= l < T} L[l][d]``
  (:func:`max_forgetting`);
* BWT and FWT (Lopez-Paz & Ranzato 2017, GEM, on ``R = -L``): ``mean_d (L[s(d)][d] - L[T][d])``
  and ``mean_{i>=2} (L[0][d_i] - L[i-1][d_i])`` (:func:`bwt`, :func:`fwt`);
* final average loss, the loss analogue of ACC: ``mean_d L[T][d]`` over all trained domains
  (:func:`final_average_loss`);
* general retention %: ``100 (L[k][g] - L[0][g]) / L[0][g]`` for a never-trained domain ``g``
  (:func:`general_retention_pct`).

:func:`forgetting_table` and :func:`summary_metrics` collect them per domain / per run;
:mod:`continual.metrics.multitask` summarises a run that trains every domain in one stage.
Gradient-norm stability lives in :mod:`continual.metrics.stability`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

LossMatrix = pd.DataFrame | np.ndarray

__all__ = [
    "LossMatrix",
    "average_forgetting_pct",
    "backbone_drift_pct",
    "bwt",
    "final_average_loss",
    "forgetting_abs",
    "forgetting_pct",
    "forgetting_table",
    "fwt",
    "general_retention_pct",
    "loss_matrix",
    "max_forgetting",
    "summary_metrics",
]

FORGETTING_TABLE_COLUMNS = [
    "domain",
    "trained_at_stage",
    "loss_after_own_stage",
    "loss_final",
    "delta_nll",
    "forgetting_pct",
    "max_forgetting",
]


# --------------------------------------------------------------------------- validation


def loss_matrix(
    values: np.ndarray | Sequence[Sequence[float]],
    columns: Sequence[str],
    stages: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Label a 2-D array of losses (nats) as a loss matrix: rows = stages, columns = domains.

    ``stages`` defaults to ``0..n_rows-1``. (To read the matrix out of a run's tidy
    ``metrics.csv`` table instead, use :func:`continual.rundir.loss_matrix`.)
    """
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"loss matrix must be 2-D (stages x domains), got shape {arr.shape}")
    if arr.shape[1] != len(columns):
        raise ValueError(
            f"loss matrix has {arr.shape[1]} columns but {len(columns)} domain labels were given"
        )
    idx = list(range(arr.shape[0])) if stages is None else list(stages)
    if len(idx) != arr.shape[0]:
        raise ValueError(f"loss matrix has {arr.shape[0]} rows but {len(idx)} stage labels")
    return pd.DataFrame(arr, index=pd.Index(idx, name="stage"), columns=list(columns))


def _check_order(order: Sequence[str]) -> list[str]:
    if isinstance(order, str):
        raise ValueError("order must be a sequence of domain names, not a single string")
    names = list(order)
    if not names:
        raise ValueError("order is empty: at least one trained domain is needed")
    dups = sorted(d for d, count in Counter(names).items() if count > 1)
    if dups:
        raise ValueError(f"order has duplicate domains {dups}: each domain is trained once")
    return names


def _stage_index(df: pd.DataFrame) -> pd.DataFrame:
    """Return ``df`` with an integer stage index (sorted); reject non-integer stage labels."""
    stages: list[int] = []
    for label in df.index:
        if isinstance(label, (bool, np.bool_)) or not isinstance(
            label, (int, np.integer, float, np.floating)
        ):
            raise ValueError(
                f"loss matrix index must be integer stages 0..T, got label {label!r}; "
                "build it with continual.metrics.loss_matrix(values, columns)"
            )
        if float(label) != int(label):
            raise ValueError(f"loss matrix stage label {label!r} is not an integer")
        stages.append(int(label))
    if len(set(stages)) != len(stages):
        raise ValueError(f"loss matrix has duplicate stage rows: {stages}")
    out = df.copy()
    out.index = pd.Index(stages, name="stage")
    try:
        out = out.astype(float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"loss matrix values must be numeric losses (nats): {exc}") from exc
    return out.sort_index()


def _prepare(L: LossMatrix, order: Sequence[str]) -> tuple[pd.DataFrame, list[str], int]:
    """Validate ``L`` against ``order``; return (matrix with int stage index, order, T)."""
    names = _check_order(order)
    T = len(names)
    if isinstance(L, np.ndarray):
        if L.ndim != 2 or L.shape[1] != T:
            raise ValueError(
                f"a numpy loss matrix must have shape (T+1, T) = ({T + 1}, {T}) with columns "
                f"in `order`, got {L.shape}; use loss_matrix(values, columns) for other columns"
            )
        df = loss_matrix(L, names)
    elif isinstance(L, pd.DataFrame):
        df = _stage_index(L)
    else:
        raise ValueError(f"loss matrix must be a pandas DataFrame or numpy array, got {type(L)}")

    missing_cols = [d for d in names if d not in df.columns]
    if missing_cols:
        raise ValueError(
            f"loss matrix lacks domain column(s) {missing_cols}; columns are {list(df.columns)}"
        )
    missing_rows = [k for k in range(T + 1) if k not in df.index]
    if missing_rows:
        raise ValueError(
            f"loss matrix lacks stage row(s) {missing_rows}: need stages 0..{T} for "
            f"order of length {T}; index is {list(df.index)}"
        )
    extra_rows = [k for k in df.index if k < 0 or k > T]
    if extra_rows:
        raise ValueError(
            f"loss matrix has stage row(s) {extra_rows} outside 0..{T} (T = len(order)); "
            "pass the full order or slice the matrix to the stages of interest"
        )
    return df, names, T


def _nanmean(values: Sequence[float]) -> float:
    """Mean that is NaN (without a warning) for an empty sequence; NaNs propagate."""
    return float(np.mean(values)) if len(values) else float("nan")


# --------------------------------------------------------------------------- forgetting


def forgetting_pct(L: LossMatrix, order: Sequence[str]) -> dict[str, float]:
    """Relative forgetting per earlier domain, in percent (published / vendor definition).

    For every trained domain ``d`` except the last one (trained at stage ``s(d) < T``)::

        100 * (L[T][d] - L[s(d)][d]) / L[s(d)][d]

    i.e. relative to the loss right after the domain's own stage, not to the base model.
    Positive = worse. Percent of the post-stage loss; inflates when that loss is small, so
    report :func:`forgetting_abs` alongside.
    """
    df, names, T = _prepare(L, order)
    out: dict[str, float] = {}
    for s, d in enumerate(names[:-1], start=1):
        ref = df.at[s, d]
        out[d] = float(100.0 * (df.at[T, d] - ref) / ref)
    return out


def forgetting_abs(L: LossMatrix, order: Sequence[str]) -> dict[str, float]:
    """Absolute forgetting (delta NLL) per earlier domain, in nats.

    Same definition as :func:`forgetting_pct` without the normalisation:
    ``L[T][d] - L[s(d)][d]`` for every trained domain but the last. Positive = worse.
    """
    df, names, T = _prepare(L, order)
    return {d: float(df.at[T, d] - df.at[s, d]) for s, d in enumerate(names[:-1], start=1)}


def average_forgetting_pct(L: LossMatrix, order: Sequence[str]) -> float:
    """Average relative forgetting in percent (vendor convention).

    Mean of :func:`forgetting_pct` over the domains trained before the last stage (``i < T``):
    the last domain has nothing to forget yet, so a 4-domain run averages 3 numbers, e.g.
    ``(228 + 593 + 233) / 3 = 351``. NaN when ``T == 1``. Positive = worse.
    """
    return _nanmean(list(forgetting_pct(L, order).values()))


def backbone_drift_pct(L: LossMatrix, order: Sequence[str]) -> dict[str, float]:
    """Backbone drift per earlier domain, in percent, for modular methods.

    Same formula as :func:`forgetting_pct`, ``100 * (L[T][d] - L[s(d)][d]) / L[s(d)][d]``,
    read for methods that keep a fixed per-domain adapter: adapter ``d`` is frozen after stage
    ``s(d)``, so any change comes from the shared backbone (or mixing weights) changing.
    Positive = worse.
    """
    return forgetting_pct(L, order)


def max_forgetting(L: LossMatrix, order: Sequence[str]) -> dict[str, float]:
    """Max-based forgetting per earlier domain, in nats (Chaudhry et al. 2018, for losses).

    Chaudhry et al. define ``f_d = max_{l<T} R[l][d] - R[T][d]`` on an accuracy-like matrix;
    with losses (sign flipped) and ``l`` restricted to stages at or after the domain's own::

        f_d = L[T][d] - min_{s(d) <= l < T} L[l][d]

    i.e. how far the final loss is above the best loss the domain reached after it was trained.
    Positive = worse. Covers every trained domain but the last (NaN entries are skipped in the
    min; all-NaN gives NaN).
    """
    df, names, T = _prepare(L, order)
    out: dict[str, float] = {}
    for s, d in enumerate(names[:-1], start=1):
        best = df.loc[s : T - 1, d].min(skipna=True)
        out[d] = float(df.at[T, d] - best)
    return out


def bwt(L: LossMatrix, order: Sequence[str]) -> float:
    """Backward transfer in nats (Lopez-Paz & Ranzato 2017, GEM), on losses.

    With ``R = -L``: ``BWT = mean_{i<T} (R[T][i] - R[i][i]) = mean_{i<T} (L[i][d_i] - L[T][d_i])``
    where ``d_i = order[i-1]``. Literature sign: NEGATIVE = forgetting (final loss above the loss
    right after the domain's stage), positive = later stages helped. NaN when ``T == 1``.
    """
    df, names, T = _prepare(L, order)
    return _nanmean([df.at[i, d] - df.at[T, d] for i, d in enumerate(names[:-1], start=1)])


def fwt(L: LossMatrix, order: Sequence[str]) -> float:
    """Forward transfer in nats (Lopez-Paz & Ranzato 2017, GEM), on losses.

    With ``R = -L``: ``FWT = mean_{i=2..T} (R[i-1][i] - R[0][i])
    = mean_{i=2..T} (L[0][d_i] - L[i-1][d_i])``: how much training the earlier domains lowered
    domain ``d_i``'s loss before its own stage, relative to the untrained model (stage 0 stands
    in for GEM's random-init baseline). POSITIVE = earlier stages helped. NaN when ``T == 1``.
    """
    df, names, T = _prepare(L, order)
    return _nanmean([df.at[0, d] - df.at[i - 1, d] for i, d in enumerate(names, start=1) if i >= 2])


def final_average_loss(L: LossMatrix, order: Sequence[str]) -> float:
    """Final average loss in nats: ``mean_d L[T][d]`` over all ``T`` trained domains.

    The loss analogue of ACC (Lopez-Paz & Ranzato 2017, ``ACC = mean_i R[T][i]``); lower = better.
    Extra (never-trained) columns are excluded.
    """
    df, names, T = _prepare(L, order)
    return _nanmean([df.at[T, d] for d in names])


def general_retention_pct(L: LossMatrix, domain: str = "general") -> pd.Series:
    """Relative change of a holdout-only domain's loss per stage, in percent.

    ``100 * (L[k][g] - L[0][g]) / L[0][g]`` for every stage ``k`` (stage 0 gives 0), where
    ``g`` is a domain never trained (general capability). Positive = general capability got
    worse. Returns a Series indexed by stage.
    """
    if isinstance(L, np.ndarray):
        raise ValueError("general_retention_pct needs a labelled DataFrame (see loss_matrix)")
    if not isinstance(L, pd.DataFrame):
        raise ValueError(f"loss matrix must be a pandas DataFrame, got {type(L)}")
    df = _stage_index(L)
    if domain not in df.columns:
        raise ValueError(
            f"loss matrix lacks domain column {domain!r}; columns are {list(df.columns)}"
        )
    if 0 not in df.index:
        raise ValueError("loss matrix lacks stage row 0 (before training), the reference")
    ref = df.at[0, domain]
    out = 100.0 * (df[domain] - ref) / ref
    out.name = f"general_retention_pct/{domain}"
    return out


# --------------------------------------------------------------------------- tables


def forgetting_table(L: LossMatrix, order: Sequence[str]) -> pd.DataFrame:
    """One row per domain trained before the last stage.

    Columns: ``domain``, ``trained_at_stage`` (``s(d)``), ``loss_after_own_stage``
    (``L[s(d)][d]``, nats), ``loss_final`` (``L[T][d]``, nats), ``delta_nll`` (nats, see
    :func:`forgetting_abs`), ``forgetting_pct`` (percent, see :func:`forgetting_pct`),
    ``max_forgetting`` (nats, Chaudhry et al. 2018, see :func:`max_forgetting`).
    Empty (with these columns) when ``T == 1``.
    """
    df, names, T = _prepare(L, order)
    pct = forgetting_pct(df, names)
    mx = max_forgetting(df, names)
    rows = [
        {
            "domain": d,
            "trained_at_stage": s,
            "loss_after_own_stage": float(df.at[s, d]),
            "loss_final": float(df.at[T, d]),
            "delta_nll": float(df.at[T, d] - df.at[s, d]),
            "forgetting_pct": pct[d],
            "max_forgetting": mx[d],
        }
        for s, d in enumerate(names[:-1], start=1)
    ]
    return pd.DataFrame(rows, columns=FORGETTING_TABLE_COLUMNS)


def summary_metrics(
    L: LossMatrix, order: Sequence[str], general: str | None = "general"
) -> dict[str, float]:
    """Flat dict of scalar metrics with stable names (for tidy per-run tables).

    Keys (``<d>`` ranges over ``order``):

    * ``avg_forgetting_pct`` (%), ``avg_delta_nll`` (nats), ``avg_max_forgetting`` (nats):
      means over the domains trained before the last stage (NaN when ``T == 1``);
    * ``bwt``, ``fwt`` (nats, Lopez-Paz & Ranzato 2017 on ``R = -L``; higher = better);
    * ``final_avg_loss`` (nats, mean of ``L[T][d]`` over trained domains);
    * ``forgetting_pct/<d>``, ``delta_nll/<d>``, ``max_forgetting/<d>`` for each domain but
      the last; ``final_loss/<d>`` for every trained domain;
    * unless ``general`` is None: ``general_retention_pct_final`` (%, stage ``T`` vs stage 0)
      and ``general_loss_final`` (nats); both NaN when that column is absent.
    """
    df, names, T = _prepare(L, order)
    pct = forgetting_pct(df, names)
    dnll = forgetting_abs(df, names)
    mx = max_forgetting(df, names)
    out: dict[str, float] = {
        "avg_forgetting_pct": _nanmean(list(pct.values())),
        "avg_delta_nll": _nanmean(list(dnll.values())),
        "avg_max_forgetting": _nanmean(list(mx.values())),
        "bwt": bwt(df, names),
        "fwt": fwt(df, names),
        "final_avg_loss": final_average_loss(df, names),
    }
    if general is not None:
        if general in df.columns:
            out["general_retention_pct_final"] = float(general_retention_pct(df, general).loc[T])
            out["general_loss_final"] = float(df.at[T, general])
        else:
            out["general_retention_pct_final"] = float("nan")
            out["general_loss_final"] = float("nan")
    for d in names[:-1]:
        out[f"forgetting_pct/{d}"] = pct[d]
        out[f"delta_nll/{d}"] = dnll[d]
        out[f"max_forgetting/{d}"] = mx[d]
    for d in names:
        out[f"final_loss/{d}"] = float(df.at[T, d])
    return out
