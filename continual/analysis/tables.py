"""Over-seed tables of a set of runs: loss matrices, summaries, forgetting, paired differences.

Every table is computed from the tidy metrics table of
:func:`continual.analysis.runs.load_metrics`:

* :func:`loss_matrices`: the stage x domain holdout-NLL matrix ``L`` of every run;
  :func:`mean_matrix` / :func:`stage_summary`: its mean and SD over seeds;
* :func:`run_summaries`: each run's final-stage scalar metrics
  (:func:`continual.metrics.summary_metrics`: forgetting %, delta NLL, max forgetting, BWT,
  FWT, final average loss, general retention; for runs with pairs domains also
  :func:`continual.metrics.accuracy_summary`: accuracy forgetting in points and %, BWT, FWT,
  final average accuracy) and :func:`summary_table` per method;
* :func:`forgetting_summary`: forgetting per earlier domain, ``100 (L[T][d] - L[s(d)][d]) /
  L[s(d)][d]`` and friends, per method;
* :func:`gradient_summary`: per-stage gradient-norm statistics
  (:func:`continual.metrics.gradient_stability`);
* :func:`paired_differences`: paired (by seed) differences between methods.

Statistics over seeds (n, mean, sample SD, two-sided Student-t 95% CI of the mean, paired
t-test) are those of :mod:`continual.metrics.stats`.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from continual import metrics as clm
from continual.analysis.runs import (
    RUN_KEYS,
    check_unique_runs,
    domain_order,
    is_reference,
    method_order,
    trained_order,
)
from continual.metrics.stats import paired_difference, summarize_runs
from continual.rundir import PROMPTED_ACC_GAP, PROMPTED_GAP, loss_matrix

__all__ = [
    "GRAD_STATS",
    "forgetting_summary",
    "gradient_summary",
    "loss_matrices",
    "mean_matrix",
    "paired_differences",
    "run_summaries",
    "stage_summary",
    "summary_table",
]

GRAD_STATS = ["peak", "mean", "p95", "median", "n_spikes"]


def loss_matrices(metrics: pd.DataFrame) -> dict[tuple[str, int], pd.DataFrame]:
    """Stage x domain holdout-NLL matrix (nats) of every run, keyed by (method, seed).

    Columns follow :func:`domain_order`. Raises ValueError if two runs share (method, seed).
    """
    check_unique_runs(metrics)
    cols = domain_order(metrics)
    out: dict[tuple[str, int], pd.DataFrame] = {}
    for (method, seed), run in metrics.groupby(["method", "seed"], sort=False):
        matrix = loss_matrix(run)
        out[(str(method), int(seed))] = matrix.reindex(columns=[c for c in cols if c in matrix])
    rank = method_order(metrics)
    return {k: out[k] for k in sorted(out, key=lambda k: (rank.index(k[0]), k[1]))}


def stage_summary(metrics: pd.DataFrame, metric: str = "holdout_nll") -> pd.DataFrame:
    """n, mean, sd, ci of a per-stage metric per (method, stage, eval_domain) over seeds.

    A (method, stage, eval_domain, seed) seen twice raises ValueError (see summarize_runs)."""
    rows = metrics[metrics["metric"] == metric]
    return summarize_runs(rows, by=["method", "stage", "eval_domain"])


def mean_matrix(
    metrics: pd.DataFrame, method: str, metric: str = "holdout_nll"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean and sample SD over seeds of one method's stage x domain matrix of ``metric`` (the
    loss matrix in nats by default).

    Computed with :func:`continual.metrics.stats.summarize_runs`; the SD is NaN with a single seed.
    """
    runs = metrics[metrics["method"] == method]
    check_unique_runs(runs)
    summary = stage_summary(runs, metric)
    if summary.empty:
        raise ValueError(f"no {metric} rows for method {method!r}")
    cols = [d for d in domain_order(metrics) if d in set(summary["eval_domain"])]
    mean = summary.pivot(index="stage", columns="eval_domain", values="mean")
    sd = summary.pivot(index="stage", columns="eval_domain", values="sd")
    mean, sd = mean.reindex(columns=cols), sd.reindex(columns=cols)
    mean.columns.name = sd.columns.name = None
    return mean, sd


def _summary_names() -> set[str]:
    """Base names of the scalar metrics that :func:`continual.metrics.summary_metrics` and
    :func:`continual.metrics.accuracy_summary` write."""
    probe = clm.loss_matrix(np.ones((3, 3)), ["a", "b", "g"])
    names = {k.split("/")[0] for k in clm.summary_metrics(probe, ["a", "b"], general="g")}
    names |= {k.split("/")[0] for k in clm.accuracy_summary(probe, ["a", "b"])}
    return names | {PROMPTED_GAP, PROMPTED_ACC_GAP}  # appended by continual.recipe.summarise


def run_summaries(metrics: pd.DataFrame) -> pd.DataFrame:
    """Scalar summary metrics of every run at its final stage, one row per run x metric.

    Read from the summary rows the recipe appends at the last stage (``metric`` is
    ``avg_forgetting_pct``, ``bwt``, ... for ``eval_domain == "all"`` and ``forgetting_pct/med``
    style names for per-domain rows), plus the final-stage method diagnostics (``crma_*``).
    For a run without summary rows they are recomputed with
    :func:`continual.metrics.summary_metrics` (for a multi-task reference run,
    :func:`~continual.analysis.runs.is_reference`, with :func:`continual.metrics.multitask_summary`
    over every evaluated domain: no forgetting, BWT or FWT). Columns: run, run_dir, sequence,
    model, method, seed, metric, value. Accuracy metrics (points) come the same way, recomputed
    with :func:`continual.metrics.accuracy_summary` for a run with ``accuracy`` rows but no
    summary rows.
    """
    names = _summary_names()
    out = []
    for run_dir, run in metrics.groupby("run_dir", sort=True):
        ids = run.iloc[0][["run", *RUN_KEYS]].to_dict()
        last = int(run["stage"].max())
        final = run[run["stage"] == last]
        rows = final[final["metric"].isin(names)]
        if rows.empty and is_reference(run):  # every evaluated domain counts as trained
            matrix, accuracy = loss_matrix(run), loss_matrix(run, metric="accuracy")
            values = clm.multitask_summary(matrix, list(matrix.columns), general=None)
            if not accuracy.empty:
                values.update(clm.multitask_accuracy_summary(accuracy, list(accuracy.columns)))
        elif rows.empty:
            order = trained_order(run)
            matrix = loss_matrix(run)
            general = next((c for c in matrix.columns if c not in order), None)
            values = clm.summary_metrics(matrix, order, general=general)
            accuracy = loss_matrix(run, metric="accuracy")
            if not accuracy.empty:
                values.update(clm.accuracy_summary(accuracy, order))
        else:
            values = {
                (m if d == "all" else f"{m}/{d}"): v
                for m, d, v in zip(rows["metric"], rows["eval_domain"], rows["value"], strict=True)
            }
        diag = final[(final["eval_domain"] == "all") & ~final["metric"].isin(names)]
        values.update(dict(zip(diag["metric"], diag["value"], strict=True)))
        out += [
            {**ids, "run_dir": run_dir, "metric": k, "value": float(v)} for k, v in values.items()
        ]
    return pd.DataFrame(out, columns=["run", "run_dir", *RUN_KEYS, "metric", "value"])


def forgetting_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Forgetting per method and earlier domain, mean/SD/CI over seeds.

    One row per (method, domain trained before the last stage) plus a ``domain == "average"``
    row (the averages of :func:`continual.metrics.summary_metrics`). For each of
    ``forgetting_pct`` (%), ``delta_nll`` (nats) and ``max_forgetting`` (nats) the columns
    ``<name>_mean``, ``_sd``, ``_ci_low``, ``_ci_high``; ``n`` = seeds. Positive = worse; for
    ``modular_crma`` the same numbers are the backbone drift.
    """
    check_unique_runs(metrics)
    runs = run_summaries(metrics)
    avg = {"avg_forgetting_pct": "forgetting_pct", "avg_delta_nll": "delta_nll",
           "avg_max_forgetting": "max_forgetting"}  # fmt: skip
    rows = []
    for r in runs.itertuples(index=False):
        name, _, domain = str(r.metric).partition("/")
        if domain and name in avg.values():
            rows.append((r.method, r.seed, domain, name, r.value))
        elif name in avg:
            rows.append((r.method, r.seed, "average", avg[name], r.value))
    tidy = pd.DataFrame(rows, columns=["method", "seed", "domain", "metric", "value"])
    cols = ["method", "domain", "trained_at_stage", "n"] + [
        f"{m}_{s}" for m in avg.values() for s in ("mean", "sd", "ci_low", "ci_high")
    ]
    if tidy.empty:
        return pd.DataFrame(columns=cols)
    summary = summarize_runs(tidy, by=["method", "domain"])
    wide = summary.pivot(
        index=["method", "domain"], columns="metric", values=["mean", "sd", "ci_low", "ci_high"]
    )
    wide.columns = [f"{metric}_{stat}" for stat, metric in wide.columns]
    wide = wide.reset_index()
    n = summary.groupby(["method", "domain"])["n"].max().rename("n").reset_index()
    wide = wide.merge(n, on=["method", "domain"])
    orders = {m: trained_order(g) for m, g in metrics.groupby("method")}

    def stage_of(row: pd.Series) -> object:
        order = orders[row["method"]]
        return order.index(row["domain"]) + 1 if row["domain"] in order else pd.NA

    wide["trained_at_stage"] = wide.apply(stage_of, axis=1).astype("Int64")
    methods = method_order(metrics)
    wide["_m"] = wide["method"].map(methods.index)
    wide["_d"] = wide["trained_at_stage"].fillna(len(domain_order(metrics)) + 1).astype(int)
    wide = wide.sort_values(["_m", "_d"]).drop(columns=["_m", "_d"])
    return wide.reindex(columns=cols).reset_index(drop=True)


def gradient_summary(metrics: pd.DataFrame, by_stage: bool = False) -> pd.DataFrame:
    """Gradient-stability statistics per method (``by_stage``: per method and stage).

    From the ``grad_norm_*`` rows the recipe writes per stage (see
    :func:`continual.metrics.gradient_stability`): for ``peak``, ``mean``, ``p95``, ``median``
    and ``n_spikes``, n / mean / SD / CI over stages and seeds (over seeds with ``by_stage``).
    Tidy: columns method, [stage, stage_domain,] metric, n, mean, sd, ci_low, ci_high.
    """
    wanted = [f"grad_norm_{s}" for s in GRAD_STATS]
    rows = metrics[metrics["metric"].isin(wanted)].copy()
    rows["metric"] = rows["metric"].str.removeprefix("grad_norm_")
    rows["unit"] = rows["run_dir"].astype(str) + ":" + rows["stage"].astype(str)
    by = ["method", "stage", "stage_domain"] if by_stage else ["method"]
    out = summarize_runs(rows, by=by, seed_col="unit")
    rank = {m: i for i, m in enumerate(method_order(metrics))} if len(metrics) else {}
    out["_m"] = out["method"].map(rank)
    out["_s"] = out["metric"].map(GRAD_STATS.index)
    sort = ["_m", "stage", "_s"] if by_stage else ["_m", "_s"]
    return out.sort_values(sort).drop(columns=["_m", "_s"]).reset_index(drop=True)


def paired_differences(
    metrics: pd.DataFrame,
    metric: str = "avg_forgetting_pct",
    min_seeds: int = 2,
    reference: str | None = None,
) -> pd.DataFrame:
    """Paired (by seed) differences ``a - b`` of a final-stage metric for every method pair,
    or, with ``reference``, of every other method against it (``a`` = the method, ``b`` =
    ``reference``: positive = higher than the reference).

    Uses :func:`continual.metrics.stats.paired_difference` (Student-t CI, two-sided paired
    t-test) for pairs sharing at least ``min_seeds`` seeds with values. Columns: method_a,
    method_b, metric, n, mean, sd, ci_low, ci_high, t_stat, p_value, seeds.
    """
    cols = ["method_a", "method_b", "metric", "n", "mean", "sd", "ci_low", "ci_high",
            "t_stat", "p_value", "seeds"]  # fmt: skip
    runs = run_summaries(metrics)
    runs = runs[(runs["metric"] == metric) & runs["value"].notna()]
    methods = method_order(runs) if len(runs) else []
    if reference is None:
        pairs = list(combinations(methods, 2))
    else:
        pairs = [(m, reference) for m in methods if m != reference and reference in methods]
    rows = []
    for a, b in pairs:
        shared = set(runs.loc[runs["method"] == a, "seed"]) & set(
            runs.loc[runs["method"] == b, "seed"]
        )
        if len(shared) < min_seeds:
            continue
        res = paired_difference(runs, a, b, metric)
        rows.append({k: res[k] for k in cols if k in res} | {"method_a": a, "method_b": b})
    return pd.DataFrame(rows, columns=cols)


ALL_PAIRS_UP_TO = 6  # methods (15 pairs); with more, a report pairs each with the first one only


def paired_reference(metrics: pd.DataFrame) -> str | None:
    """The method a report pairs every other one with: ``None`` (every pair) for up to
    :data:`ALL_PAIRS_UP_TO` methods, else the first in display order (``lora``, the naive
    sequential baseline, when present), so that nine methods give 8 rows per metric, not 36."""
    methods = method_order(metrics) if len(metrics) else []
    return methods[0] if len(methods) > ALL_PAIRS_UP_TO else None


def paired_note(reference: str | None) -> str:
    """The sentence a report section adds when it pairs with ``reference`` only."""
    if reference is None:
        return ""
    return (
        f" Each method is paired with `{reference}` only (a = the method, b = `{reference}`); "
        "`python -m continual.compare <sweep>` gives every pair."
    )


def summary_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per method x final-stage scalar metric: n, mean, sd, ci_low, ci_high over seeds."""
    runs = run_summaries(metrics)
    table = summarize_runs(runs, by=["method"])
    rank = method_order(metrics)
    table["_m"] = table["method"].map(rank.index)
    return table.sort_values("_m", kind="stable").drop(columns="_m").reset_index(drop=True)
