"""A run's summary: the metrics appended at its last stage, the loss matrix and forgetting
table written beside metrics.csv, and their log (the recipe's end, :mod:`continual.recipe`).

A chain (one stage per domain) is summarised with :func:`continual.metrics.summary_metrics`;
a run whose stages are not its domains one by one (``method=joint``) with
:func:`continual.metrics.multitask_summary` (no forgetting, BWT or FWT)."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from continual import metrics as clm
from continual.eval.crma_probe import bypass_summary
from continual.rundir import PROMPTED_ACC_GAP, PROMPTED_GAP, loss_matrix

log = logging.getLogger("continual.recipe")  # the run's status lines, all under the recipe


def summarise(
    cfg: DictConfig, ids: dict[str, Any], rows: list[dict[str, Any]],
    stages: list[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, float]]:  # fmt: skip
    """Append the run's summary metrics (at the last stage) to the rows; build the tables.

    ``stages``: the trained stages (default: the sequence, one stage per domain, a chain). A
    run whose stages are not its domains one by one (``joint``) is no chain: its summary is
    :func:`continual.metrics.multitask_summary` (no forgetting, BWT or FWT) and its forgetting
    table is empty."""
    order = list(cfg.sequence.order)
    stages = order if stages is None else list(stages)
    chain = stages == order
    table = pd.DataFrame(rows)
    matrix = loss_matrix(table)
    matrix = matrix[order + [d for d in matrix.columns if d not in order]]
    general = cfg.eval.get("general_domain")
    if chain:
        summary = clm.summary_metrics(matrix, order, general=general)
    else:
        summary = clm.multitask_summary(matrix, order, general=general)
    own_stage = {d: (order.index(d) + 1 if chain else len(stages)) for d in order}
    prompted = loss_matrix(table, metric="prompted_nll")
    for domain in prompted.columns:  # < 0: fine-tuning beat prompting the base model
        gap = matrix.loc[own_stage[domain], domain] - prompted.loc[0, domain]
        summary[f"{PROMPTED_GAP}/{domain}"] = float(gap)
    bypass = loss_matrix(table, metric="crma_bypass_nll")
    if not bypass.empty:
        summary.update(bypass_summary(bypass, order, float(cfg.eval.get("crma_inert_nats", 0.01))))
    accuracy = loss_matrix(table, metric="accuracy")
    if not accuracy.empty:
        if chain:
            summary.update(clm.accuracy_summary(accuracy, order))
        else:
            summary.update(clm.multitask_accuracy_summary(accuracy, order))
        prompted_acc = loss_matrix(table, metric="prompted_accuracy")
        for domain in prompted_acc.columns:  # > 0: fine-tuning beat prompting the base model
            gap = accuracy.loc[own_stage[domain], domain] - prompted_acc.loc[0, domain]
            summary[f"{PROMPTED_ACC_GAP}/{domain}"] = float(100.0 * gap)
    extra = [
        {
            **ids,
            "stage": len(stages),
            "stage_domain": stages[-1],
            "eval_domain": key.split("/")[1] if "/" in key else "all",
            "metric": key.split("/")[0],
            "value": float(value),
        }  # fmt: skip
        for key, value in summary.items()
    ]
    extra += retention_rows(cfg, ids, table, matrix, stages)
    if chain:
        forgetting = clm.forgetting_table(matrix, order)
    else:
        forgetting = pd.DataFrame(columns=clm.FORGETTING_TABLE_COLUMNS)
    metrics = pd.DataFrame(rows + extra).drop_duplicates()  # resumed after a summary: once
    return metrics, matrix, forgetting, summary


def retention_rows(
    cfg: DictConfig, ids: dict[str, Any], table: pd.DataFrame, matrix: pd.DataFrame,
    stages: list[str] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """General capability after every stage, relative to the base (stage 0), in %:
    ``retention_pct`` of the general holdout loss (positive = worse) and
    ``lm_eval_retention_pct/<metric>`` of each extra lm-eval task (same sign as its metric).
    ``stages``: the trained stages (default: the sequence's domains)."""
    stages = list(cfg.sequence.order) if stages is None else stages
    trained = {0: "base", **{i + 1: d for i, d in enumerate(stages)}}
    out = []
    general = cfg.eval.get("general_domain")
    if general and general in matrix.columns:
        for stage, value in clm.general_retention_pct(matrix, general).items():
            out.append({**ids, "stage": int(stage), "stage_domain": trained[int(stage)],
                        "eval_domain": general, "metric": "retention_pct",
                        "value": float(value)})  # fmt: skip
    tasks = table[table["eval_domain"].isin(list(cfg.eval.lm_eval_tasks or []))]
    tasks = tasks[tasks["metric"].str.startswith("lm_eval/")]  # not a resumed summary's rows
    for (task, metric), group in tasks.groupby(["eval_domain", "metric"]):
        base = group.loc[group["stage"] == 0, "value"]
        if base.empty or base.iloc[0] == 0:
            continue
        for stage, value in zip(group["stage"], group["value"], strict=True):
            change = 100.0 * (value - base.iloc[0]) / abs(base.iloc[0])
            name = f"lm_eval_retention_pct/{metric.split('/')[-1]}"
            out.append({**ids, "stage": int(stage), "stage_domain": trained[int(stage)],
                        "eval_domain": task, "metric": name, "value": float(change)})  # fmt: skip
    return out


def log_report(
    metrics: pd.DataFrame, matrix: pd.DataFrame, forgetting: pd.DataFrame, stages: list[str],
    order: list[str] | None = None, split: str = "holdout",
) -> None:  # fmt: skip
    """Log the stage x domain loss matrix (on the ``split`` evaluated), the accuracy matrix of
    pairs domains and the forgetting tables (a chain's; ``order``: the sequence, default
    ``stages``)."""
    order = stages if order is None else order
    labels = ["base"] + [f"after {d}" for d in stages]
    shown = matrix.copy()
    shown.index = labels
    shown.index.name = f"{split} NLL"
    accuracy = loss_matrix(metrics, metric="accuracy")
    accuracy = accuracy[[d for d in order if d in accuracy.columns]]
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        log.info("Stage x domain %s loss (mean token NLL, nats):\n%s", split, shown.to_string())
        if not accuracy.empty:
            table = clm.accuracy_forgetting_table(accuracy, order) if stages == order else None
            accuracy.index = labels
            accuracy.index.name = "accuracy"
            log.info("Stage x domain task accuracy (pairs domains):\n%s", accuracy.to_string())
            if table is not None:
                log.info(
                    "Accuracy forgetting (points and %% of the accuracy after the own stage):\n%s",
                    table.to_string(index=False),
                )
        if stages == order:
            log.info(
                "Forgetting (final stage vs right after the domain's own stage):\n%s",
                forgetting.to_string(index=False),
            )
        else:
            log.info("One multi-task stage (%s): a reference, no forgetting.", stages[-1])
        bypass = loss_matrix(metrics, metric="crma_bypass_nll")
        if not bypass.empty:
            bypass = bypass[order + [d for d in bypass.columns if d not in order]]
            bypass.index = labels
            inert = bool(metrics.loc[metrics["metric"] == "crma_inert", "value"].iloc[0])
            log.info(
                "CRMA bypass effect (holdout NLL with the branch off minus on, nats): %s\n%s",
                "CRMA inert (below eval.crma_inert_nats on the domain just trained after every"
                " stage)" if inert else "CRMA active", bypass.to_string(),
            )  # fmt: skip
