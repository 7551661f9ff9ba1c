"""Over-seed tables for the evaluation-depth measurements of a sweep.

* :func:`prompted_summary`: fine-tuning vs prompting the base model, per trained domain.
* :func:`retention_summary`: general capability after every stage, relative to the base.
* :func:`metric_matrix_summary` / :func:`metric_forgetting_summary`: any stage x domain metric
  (e.g. lm-eval's ``lm_eval/bits_per_byte`` on whole holdout documents) and the forgetting it
  shows, computed with the same definitions as the holdout loss
  (:func:`continual.metrics.forgetting_table`).

Every function takes the tidy metrics table of :func:`continual.analysis.runs.load_metrics`
and returns a tidy summary (``n``, ``mean``, ``sd``, ``ci_low``, ``ci_high`` over seeds, from
:func:`continual.metrics.stats.summarize_runs`); empty (with its columns) when the runs lack
the rows.
"""

from __future__ import annotations

import pandas as pd

from continual import metrics as clm
from continual.analysis.runs import method_order, trained_order
from continual.analysis.tables import stage_summary
from continual.metrics.stats import summarize_runs
from continual.rundir import loss_matrix

STATS = ["n", "mean", "sd", "ci_low", "ci_high"]
PROMPTED_METRICS = ["base_nll", "prompted_nll", "finetuned_nll", "final_nll",
                    "finetuned_minus_prompted", "final_minus_prompted"]  # fmt: skip
LM_EVAL_BPB = "lm_eval/bits_per_byte"


def _summarise(rows: list[tuple], by: list[str], then: tuple[str, ...] = ()) -> pd.DataFrame:
    """summarize_runs over (method, seed, *by[1:], metric, value) tuples; sorted by method
    (display order), then by the columns ``then``."""
    cols = ["method", "seed", *by[1:], "metric", "value"]
    tidy = pd.DataFrame(rows, columns=cols)
    if tidy.empty:
        return pd.DataFrame(columns=[*by, "metric", *STATS])
    out = summarize_runs(tidy, by=by)
    rank = method_order(tidy)
    out["_m"] = out["method"].map(rank.index)
    out = out.sort_values(["_m", *then], kind="stable")
    return out.drop(columns="_m").reset_index(drop=True)


def prompted_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Fine-tuning vs the prompted base model, per method and trained domain ``d``.

    Per run, from the stage-0 ``prompted_nll`` rows (the base model with ``eval.prompted_k``
    training passages of ``d`` in its context, :func:`continual.eval.prompted.prompted_holdout_nll`)
    and the holdout loss matrix ``L``: ``base_nll`` = L[0][d], ``prompted_nll``,
    ``finetuned_nll`` = L[s(d)][d] (right after d's own stage), ``final_nll`` = L[T][d],
    ``finetuned_minus_prompted`` and ``final_minus_prompted`` (nats; < 0: the fine-tuned model
    beat prompting). Columns: method, domain, metric, n, mean, sd, ci_low, ci_high.
    """
    rows = []
    for (method, seed), run in metrics.groupby(["method", "seed"], sort=False):
        prompted = run[(run["metric"] == "prompted_nll") & (run["stage"] == 0)]
        if prompted.empty:
            continue
        matrix, order = loss_matrix(run), trained_order(run)
        last = int(matrix.index.max())
        for domain, value in zip(prompted["eval_domain"], prompted["value"], strict=True):
            if domain not in order or domain not in matrix.columns:
                continue
            own = matrix.at[order.index(domain) + 1, domain]
            final = matrix.at[last, domain]
            values = [matrix.at[0, domain], value, own, final, own - value, final - value]
            rows += [
                (method, seed, domain, name, float(v))
                for name, v in zip(PROMPTED_METRICS, values, strict=True)
            ]
    return _summarise(rows, ["method", "domain"])


def retention_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """General capability per method, stage and evaluated domain or lm-eval task.

    Over seeds: the ``retention_pct`` rows (general holdout loss vs the base, %, positive =
    worse; :func:`continual.metrics.general_retention_pct`) with the general holdout loss itself
    (``holdout_nll``), and every ``lm_eval_retention_pct/<metric>`` row of extra lm-eval tasks
    (% change vs the base, same sign as the metric). Columns: method, stage, eval_domain,
    metric, n, mean, sd, ci_low, ci_high.
    """
    wanted = metrics["metric"].eq("retention_pct") | metrics["metric"].str.startswith(
        "lm_eval_retention_pct/"
    )
    general = set(metrics.loc[metrics["metric"] == "retention_pct", "eval_domain"])
    wanted |= metrics["metric"].eq("holdout_nll") & metrics["eval_domain"].isin(general)
    rows = [
        (r.method, r.seed, int(r.stage), r.eval_domain, r.metric, float(r.value))
        for r in metrics[wanted].itertuples(index=False)
    ]
    return _summarise(rows, ["method", "stage", "eval_domain"], then=("eval_domain", "stage"))


def metric_matrix_summary(metrics: pd.DataFrame, metric: str = LM_EVAL_BPB) -> pd.DataFrame:
    """Stage x domain values of ``metric`` over seeds
    (:func:`continual.analysis.tables.stage_summary`). Columns: method, stage, eval_domain,
    metric, n, mean, sd, ci_low, ci_high."""
    return stage_summary(metrics, metric)


def metric_forgetting_summary(metrics: pd.DataFrame, metric: str = LM_EVAL_BPB) -> pd.DataFrame:
    """Forgetting measured with a loss-like ``metric`` instead of the holdout NLL.

    Per run, :func:`continual.metrics.forgetting_table` on the stage x domain matrix of
    ``metric``: ``forgetting_pct`` = 100 (M[T][d] - M[s(d)][d]) / M[s(d)][d] and ``delta`` =
    M[T][d] - M[s(d)][d] (in the metric's unit) per earlier domain, and their average over
    domains (``domain == "average"``). Columns: method, domain, metric, n, mean, sd, ci_low,
    ci_high.
    """
    rows = []
    for (method, seed), run in metrics.groupby(["method", "seed"], sort=False):
        matrix, order = loss_matrix(run, metric=metric), trained_order(run)
        if matrix.empty or not set(order) <= set(matrix.columns) or len(order) < 2:
            continue
        table = clm.forgetting_table(matrix[order], order)
        for r in table.itertuples(index=False):
            rows += [(method, seed, r.domain, "forgetting_pct", float(r.forgetting_pct)),
                     (method, seed, r.domain, "delta", float(r.delta_nll))]  # fmt: skip
        rows += [(method, seed, "average", "forgetting_pct", float(table["forgetting_pct"].mean())),
                 (method, seed, "average", "delta", float(table["delta_nll"].mean()))]  # fmt: skip
    return _summarise(rows, ["method", "domain"])
