"""Over-seed tables of the task accuracy of ``pairs`` domains (higher = better).

With ``A`` a run's stage x domain accuracy matrix (fractions; :mod:`continual.metrics.accuracy`),
``s(d)`` the stage that trains ``d`` and ``T`` the last stage:

* :func:`accuracy_matrix`: mean and SD over seeds of ``100 A[k][d]`` (%) per method (or of
  ROUGE-L F1, for domains that generate their answers);
* :func:`accuracy_forgetting_summary`: per earlier domain, forgetting in points
  ``100 (A[s(d)][d] - A[T][d])`` and in % of ``A[s(d)][d]``, max forgetting (Chaudhry et al.
  2018) in points, with the response-only delta NLL ``L[T][d] - L[s(d)][d]`` (nats) beside them
  (positive = worse for all four);
* :func:`accuracy_summary_table`: the run-level metrics of
  :func:`continual.metrics.accuracy_summary` (:data:`ACC_SUMMARY_METRICS`: final average
  accuracy, BWT and FWT with the literature sign, average forgetting) per method;
* :func:`accuracy_prompted_summary`: fine-tuning vs the base model prompted with
  ``eval.prompted_k`` solved examples, ``100 (A[s(d)][d] - prompted)`` in points (> 0:
  fine-tuning beat prompting).

Every function takes the tidy table of :func:`continual.analysis.runs.load_metrics` and returns a
tidy summary (``n``, ``mean``, ``sd``, ``ci_low``, ``ci_high`` over seeds from
:func:`continual.metrics.stats.summarize_runs`: sample SD, two-sided 95% Student-t CI; NaNs,
e.g. the % of a zero accuracy, are left out of ``n``); empty (with its columns) when the runs have
no ``accuracy`` rows.
"""

from __future__ import annotations

import pandas as pd

from continual import metrics as clm
from continual.analysis.eval_tables import STATS
from continual.analysis.runs import method_order, trained_order
from continual.analysis.tables import mean_matrix, run_summaries
from continual.metrics.stats import summarize_runs
from continual.rundir import loss_matrix

__all__ = [
    "ACC_FORGETTING_METRICS",
    "ACC_PROMPTED_METRICS",
    "ACC_SUMMARY_METRICS",
    "accuracy_forgetting_summary",
    "accuracy_matrix",
    "accuracy_prompted_summary",
    "accuracy_summary_table",
    "has_accuracy",
    "is_accuracy_metric",
]

# run-level metrics of continual.metrics.accuracy_summary, in display order (points; _pct in %)
ACC_SUMMARY_METRICS = ["final_avg_accuracy", "acc_bwt", "acc_fwt", "acc_avg_forgetting_pts",
                       "acc_avg_forgetting_pct", "acc_avg_max_forgetting_pts"]  # fmt: skip
ACC_FORGETTING_METRICS = ["acc_after_own_stage", "acc_final", "forgetting_pts", "forgetting_pct",
                          "max_forgetting_pts", "delta_nll"]  # fmt: skip
ACC_PROMPTED_METRICS = ["base_acc", "prompted_acc", "finetuned_acc", "final_acc",
                        "finetuned_minus_prompted_pts", "final_minus_prompted_pts"]  # fmt: skip
_ACC_PREFIXES = ("acc_", "final_avg_accuracy", "final_accuracy/", "finetune_minus_prompted_acc")


def has_accuracy(metrics: pd.DataFrame) -> bool:
    """Whether the runs hold ``accuracy`` rows (a ``pairs`` domain was evaluated)."""
    return bool((metrics["metric"] == "accuracy").any())


def is_accuracy_metric(name: str) -> bool:
    """Whether a summary metric name (``acc_bwt``, ``final_accuracy/legal``, ...) is one of the
    accuracy metrics (points or %) rather than a loss metric."""
    return str(name).startswith(_ACC_PREFIXES)


def _summarise(rows: list[tuple], by: list[str]) -> pd.DataFrame:
    """summarize_runs over (method, seed, *by[1:], metric, value) tuples, methods in display
    order, the rest in order of first appearance."""
    tidy = pd.DataFrame(rows, columns=["method", "seed", *by[1:], "metric", "value"])
    if tidy.empty:
        return pd.DataFrame(columns=[*by, "metric", *STATS])
    out = summarize_runs(tidy, by=by)
    rank = method_order(tidy)
    out["_m"] = out["method"].map(rank.index)
    return out.sort_values("_m", kind="stable").drop(columns="_m").reset_index(drop=True)


def accuracy_matrix(
    metrics: pd.DataFrame, method: str, metric: str = "accuracy"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean and sample SD over seeds of one method's stage x domain accuracy, in %
    (``100 A[k][d]``); columns are the domains with an accuracy, in sequence order. ``metric``
    may name another fraction, e.g. ``"rougeL"`` (ROUGE-L F1 of generated answers)."""
    mean, sd = mean_matrix(metrics, method, metric=metric)
    return 100.0 * mean, 100.0 * sd


def accuracy_forgetting_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Accuracy forgetting per method and domain with an accuracy trained before the last stage.

    Per run (:func:`continual.metrics.accuracy_forgetting_table`): ``acc_after_own_stage`` =
    100 A[s(d)][d] and ``acc_final`` = 100 A[T][d] (%), ``forgetting_pts`` (points),
    ``forgetting_pct`` (%, NaN when A[s(d)][d] = 0), ``max_forgetting_pts`` (points) and the
    response-only ``delta_nll`` (nats, :func:`continual.metrics.forgetting_table`); plus
    ``domain == "average"`` rows: the ``acc_avg_forgetting_pts``, ``acc_avg_forgetting_pct`` and
    ``acc_avg_max_forgetting_pts`` of :func:`continual.metrics.accuracy_summary` and the delta
    NLL averaged over the same domains.
    Positive = worse. Columns: method, domain, metric, n, mean, sd, ci_low, ci_high.
    """
    rows: list[tuple] = []
    for (method, seed), run in metrics.groupby(["method", "seed"], sort=False):
        acc, order = loss_matrix(run, metric="accuracy"), trained_order(run)
        if acc.empty:
            continue
        table = clm.accuracy_forgetting_table(acc, order)
        if table.empty:
            continue
        nll = loss_matrix(run)
        delta: dict[str, float] = {}
        if set(order) <= set(nll.columns):
            loss = clm.forgetting_table(nll[order], order)
            delta = dict(zip(loss["domain"], loss["delta_nll"], strict=True))
        for r in table.itertuples(index=False):
            values = [
                100.0 * r.acc_after_own_stage,
                100.0 * r.acc_final,
                r.forgetting_pts,
                r.forgetting_pct,
                r.max_forgetting_pts,
                delta.get(r.domain, float("nan")),
            ]
            rows += [(method, seed, r.domain, name, float(v))
                     for name, v in zip(ACC_FORGETTING_METRICS, values, strict=True)]  # fmt: skip
        summary = clm.accuracy_summary(acc, order)
        deltas = [delta.get(d, float("nan")) for d in table["domain"]]
        average = {"forgetting_pts": summary["acc_avg_forgetting_pts"],
                   "forgetting_pct": summary["acc_avg_forgetting_pct"],
                   "max_forgetting_pts": summary["acc_avg_max_forgetting_pts"],
                   "delta_nll": sum(deltas) / len(deltas)}  # fmt: skip
        rows += [(method, seed, "average", name, float(v)) for name, v in average.items()]
    return _summarise(rows, ["method", "domain"])


def accuracy_summary_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per method x :data:`ACC_SUMMARY_METRICS` (the run-level metrics of
    :func:`continual.metrics.accuracy_summary`, points; ``acc_avg_forgetting_pct`` in %):
    n, mean, sd, ci_low, ci_high over seeds. BWT / FWT keep the literature sign (negative BWT =
    forgetting); forgetting is positive = worse."""
    runs = run_summaries(metrics)
    runs = runs[runs["metric"].isin(ACC_SUMMARY_METRICS)]
    rows = [(r.method, r.seed, r.metric, r.value) for r in runs.itertuples(index=False)]
    out = _summarise(rows, ["method"])
    if out.empty:
        return out
    out["_k"] = out["metric"].map(ACC_SUMMARY_METRICS.index)
    out["_m"] = out["method"].map(method_order(out).index)
    return out.sort_values(["_m", "_k"]).drop(columns=["_m", "_k"]).reset_index(drop=True)


def accuracy_prompted_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Fine-tuning vs the prompted base model, per method and trained domain with an accuracy.

    Per run, from the stage-0 ``prompted_accuracy`` rows (the base model with ``eval.prompted_k``
    solved training examples in front of every prompt) and the accuracy matrix ``A``, all in %:
    ``base_acc`` = 100 A[0][d], ``prompted_acc``, ``finetuned_acc`` = 100 A[s(d)][d],
    ``final_acc`` = 100 A[T][d]; in points ``finetuned_minus_prompted_pts`` (the run's
    ``finetune_minus_prompted_acc_pts``) and ``final_minus_prompted_pts`` (> 0: the fine-tuned
    model beat prompting). Columns: method, domain, metric, n, mean, sd, ci_low, ci_high.
    """
    rows: list[tuple] = []
    for (method, seed), run in metrics.groupby(["method", "seed"], sort=False):
        prompted = run[(run["metric"] == "prompted_accuracy") & (run["stage"] == 0)]
        if prompted.empty:
            continue
        acc, order = loss_matrix(run, metric="accuracy"), trained_order(run)
        last = len(order)
        for domain, value in zip(prompted["eval_domain"], prompted["value"], strict=True):
            if domain not in order or domain not in acc.columns:
                continue
            own, final = acc.at[order.index(domain) + 1, domain], acc.at[last, domain]
            values = [acc.at[0, domain], value, own, final, own - value, final - value]
            rows += [(method, seed, domain, name, 100.0 * float(v))
                     for name, v in zip(ACC_PROMPTED_METRICS, values, strict=True)]  # fmt: skip
    return _summarise(rows, ["method", "domain"])
