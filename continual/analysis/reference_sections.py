"""The report's view of multi-task reference runs (``method=joint``: one stage on every domain
at once, :func:`continual.analysis.runs.is_reference`): every method beside the reference at
the final stage (:func:`reference_section`), with ``—`` where a number needs a chain."""

from __future__ import annotations

import pandas as pd

from continual.analysis.markdown import fmt_mean_sd, md_table
from continual.analysis.runs import domain_order, method_order, reference_methods
from continual.analysis.tables import run_summaries
from continual.metrics import ACC_CHAIN_METRICS, CHAIN_METRICS
from continual.metrics.stats import summarize_runs

__all__ = ["REFERENCE", "reference_section"]

REFERENCE = "multi-task reference"  # how the report marks a reference method


def reference_section(metrics: pd.DataFrame) -> str | None:
    """Every method at the final stage, one row each, beside the multi-task reference(s);
    ``None`` without a reference run. Cells: mean ± SD over seeds of the final average loss,
    each trained domain's final loss (nats), the final average accuracy (points, with pairs
    domains), average forgetting (%), BWT and FWT (nats); ``—`` for a reference's forgetting,
    BWT and FWT (not computed)."""
    references = reference_methods(metrics)
    if not references:
        return None
    runs = run_summaries(metrics)
    present = set(runs["metric"])
    domains = [d for d in domain_order(metrics) if f"final_loss/{d}" in present]
    accuracy = ["final_avg_accuracy"] if "final_avg_accuracy" in present else []
    chain = ["avg_forgetting_pct", "bwt", "fwt"]
    columns = ["final_avg_loss", *(f"final_loss/{d}" for d in domains), *accuracy, *chain]
    table = summarize_runs(runs[runs["metric"].isin(columns)], by=["method"])
    not_computed = set(CHAIN_METRICS) | set(ACC_CHAIN_METRICS)
    rows = []
    for method in method_order(metrics):
        by = table[table["method"] == method].set_index("metric")
        cells = []
        for c in columns:
            if method in references and c in not_computed:
                cells.append("—")
            elif c in by.index:
                digits = 2 if c in ("avg_forgetting_pct", "final_avg_accuracy") else 4
                cells.append(fmt_mean_sd(by.at[c, "mean"], by.at[c, "sd"], digits))
            else:
                cells.append("")
        n = int(metrics.loc[metrics["method"] == method, "seed"].nunique())
        name = f"{method} ({REFERENCE})" if method in references else method
        rows.append([name, n, *cells])
    header = ["method", "n", "final avg loss", *(f"final {d}" for d in domains),
              *(["final avg accuracy, pts"] if accuracy else []), "avg forgetting, %", "BWT",
              "FWT"]  # fmt: skip
    return "\n".join([
        "## Methods beside the multi-task reference (final stage, mean ± SD over seeds)",
        "",
        f"A {REFERENCE} trains every domain at once, in one stage of the chain's total steps: "
        "the usual upper bound of a continual chain. Losses in nats (holdout NLL after the last "
        "stage); forgetting, BWT and FWT need a chain, so they are `—` (not computed) for it.",
        "",
        md_table(header, rows),
    ])  # fmt: skip
