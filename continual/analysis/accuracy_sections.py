"""The report's task-accuracy sections (runs with ``pairs`` domains), each returning markdown.

Definitions (``A`` the stage x domain accuracy matrix, ``s(d)`` the stage that trains ``d``,
``T`` the last stage; :mod:`continual.metrics.accuracy`, tables from
:mod:`continual.analysis.accuracy_tables`):

* mean ± SD accuracy matrix per method, in %, and the ROUGE-L F1 matrix where the runs
  measured it (:func:`accuracy_matrix_section`);
* forgetting per earlier domain: ``100 (A[s(d)][d] - A[T][d])`` points, the same in % of
  ``A[s(d)][d]``, max forgetting (Chaudhry et al. 2018) in points, with the response-only delta
  NLL beside them (:func:`accuracy_forgetting_section`);
* the run-level metrics with 95% CIs: final average accuracy, BWT and FWT (Lopez-Paz & Ranzato
  2017; negative BWT = forgetting), average forgetting, and paired differences between methods
  (:func:`accuracy_summary_section`);
* fine-tuning vs the base model prompted with solved examples, ``100 (A[s(d)][d] - prompted)``
  points (> 0: fine-tuning beat prompting) (:func:`accuracy_prompted_section`).

:func:`accuracy_sections` returns them all, or nothing for runs without ``accuracy`` rows.
"""

from __future__ import annotations

import math

import pandas as pd

from continual.analysis import accuracy_tables as at
from continual.analysis.markdown import fmt_ci, fmt_mean_sd, fmt_num, md_table, stage_table
from continual.analysis.runs import (
    method_order,
    method_stage_labels,
    reference_methods,
    stage_labels,
)
from continual.analysis.tables import paired_differences, paired_note, paired_reference

__all__ = [
    "ACC_METRIC_NOTES",
    "accuracy_forgetting_section",
    "accuracy_matrix_section",
    "accuracy_prompted_section",
    "accuracy_sections",
    "accuracy_summary_section",
]

ACC_METRIC_NOTES = {
    "final_avg_accuracy": "final average accuracy, pts (100 mean_d A[T][d])",
    "acc_bwt": "BWT, pts (100 mean_d (A[T][d] - A[s(d)][d]); negative = forgetting)",
    "acc_fwt": "FWT, pts (100 mean_d (A[s(d)-1][d] - A[0][d]); positive = earlier stages helped)",
    "acc_avg_forgetting_pts": "average forgetting, pts (positive = worse)",
    "acc_avg_forgetting_pct": "average forgetting, % of A[s(d)][d] (positive = worse)",
    "acc_avg_max_forgetting_pts": "average max forgetting, pts (Chaudhry et al. 2018)",
}
_PAIRED = ["final_avg_accuracy", "acc_bwt", "acc_avg_forgetting_pts"]


def accuracy_sections(metrics: pd.DataFrame) -> list[str]:
    """Every accuracy section that the runs have data for; ``[]`` without ``accuracy`` rows."""
    if not at.has_accuracy(metrics):
        return []
    sections = [
        accuracy_matrix_section(metrics),
        accuracy_forgetting_section(metrics),
        accuracy_summary_section(metrics),
        accuracy_prompted_section(metrics),
    ]
    return [s for s in sections if s]


def accuracy_matrix_section(metrics: pd.DataFrame) -> str:
    """Mean ± SD over seeds of ``100 A[k][d]`` per method (pairs domains only)."""
    labels = stage_labels(metrics)
    out = [
        "## Task accuracy matrix (mean ± SD over seeds, %)",
        "",
        "Pairs domains only: the share of holdout examples answered right (the gold choice "
        "ranked first, or an exact match of the generated answer) after every stage, with the "
        "model the method serves for the domain. Higher = better. For these domains the holdout "
        "NLL in the loss tables above is the response-only NLL.",
    ]
    acc = metrics[metrics["metric"] == "accuracy"]
    references = reference_methods(metrics)
    for method in method_order(acc):
        own = method_stage_labels(metrics, method) if method in references else labels
        mean, sd = at.accuracy_matrix(metrics, method)
        seeds = sorted(int(s) for s in acc.loc[acc["method"] == method, "seed"].unique())
        out += ["", f"### {method} (n={len(seeds)}; seeds {', '.join(map(str, seeds))})", ""]
        out.append(stage_table(mean, sd, own, digits=2))
        rouge = metrics[(metrics["metric"] == "rougeL") & (metrics["method"] == method)]
        if not rouge.empty:
            mean, sd = at.accuracy_matrix(metrics, method, metric="rougeL")
            out += ["", "ROUGE-L F1 of the generated answers (%, domains with `rouge: true`):", ""]
            out.append(stage_table(mean, sd, own, digits=2))
    return "\n".join(out)


def _cell(by: pd.DataFrame, metric: str, digits: int, n: int | None = None) -> str:
    """``mean ± SD`` of one metric of a tidy summary indexed by metric; ``(n=k)`` when fewer
    seeds than ``n`` had a value."""
    if metric not in by.index:
        return ""
    row = by.loc[metric]
    text = fmt_mean_sd(row["mean"], row["sd"], digits)
    return text + (f" (n={int(row['n'])})" if n is not None and int(row["n"]) != n else "")


def accuracy_forgetting_section(metrics: pd.DataFrame) -> str:
    """Accuracy forgetting per earlier domain in points and %, with the delta NLL beside it."""
    table = at.accuracy_forgetting_summary(metrics)
    out = [
        "## Accuracy forgetting per earlier domain",
        "",
        "forgetting, pts = 100 x (A[s(d)][d] - A[T][d]): accuracy right after the domain's own "
        "stage s(d) minus accuracy after the last stage T; % = the same relative to A[s(d)][d] "
        "(n/a when that is 0, and left out of the average %); max forgetting (Chaudhry et al. "
        "2018) from the best stage from s(d) to T-1. Positive = worse. Beside them the "
        "response-only delta NLL L[T][d] - L[s(d)][d] (nats, positive = worse). For "
        "`modular_crma` these numbers are the backbone drift. Mean ± SD over seeds, 95% "
        "Student-t CI of the mean.",
        "",
    ]
    if table.empty:
        return "\n".join([*out, "No domain with an accuracy was trained before the last stage."])
    rows = []
    for (method, domain), g in table.groupby(["method", "domain"], sort=False):
        by = g.set_index("metric")
        pts = by.loc["forgetting_pts"]
        n = int(pts["n"])
        rows.append((
            method, domain, n, _cell(by, "acc_after_own_stage", 2), _cell(by, "acc_final", 2),
            _cell(by, "forgetting_pts", 2), fmt_ci(pts["ci_low"], pts["ci_high"], 2),
            _cell(by, "forgetting_pct", 2, n), _cell(by, "max_forgetting_pts", 2),
            _cell(by, "delta_nll", 4, n),
        ))  # fmt: skip
    header = ["method", "domain", "n", "acc after own stage, %", "final acc, %",
              "forgetting, pts", "pts 95% CI", "forgetting, %", "max forgetting, pts",
              "delta NLL, nats"]  # fmt: skip
    return "\n".join([*out, md_table(header, rows)])


def accuracy_summary_section(metrics: pd.DataFrame) -> str:
    """The run-level accuracy metrics per method with 95% CIs, and paired differences."""
    table = at.accuracy_summary_table(metrics)
    out = [
        "## Accuracy summary metrics (95% CIs over seeds)",
        "",
        "From the accuracy matrix of each run (points = percentage points of accuracy); the same "
        "numbers, and per domain `acc_forgetting_pts/<d>`, `final_accuracy/<d>` ..., are in "
        "`summary.csv`. BWT and FWT keep the literature sign (higher = better).",
        "",
    ]
    rows = [
        (r.metric, ACC_METRIC_NOTES.get(r.metric, ""), r.method, r.n,
         fmt_mean_sd(r.mean, r.sd, 2), fmt_ci(r.ci_low, r.ci_high, 2))
        for r in table.itertuples(index=False)
    ]  # fmt: skip
    out.append(md_table(["metric", "definition", "method", "n", "mean ± SD", "95% CI"], rows))
    reference = paired_reference(metrics)
    paired = [paired_differences(metrics, m, reference=reference) for m in _PAIRED]
    paired = [p for p in paired if not p.empty]
    if paired:
        out += [
            "",
            "Paired differences a - b (by seed; Student-t CI, two-sided paired t-test, no "
            "multiple-comparison correction): for `final_avg_accuracy` and `acc_bwt` positive = "
            "method a better, for `acc_avg_forgetting_pts` negative = method a forgets less."
            + paired_note(reference),
            "",
        ]
        rows = [
            (f"{r.method_a} - {r.method_b}", r.metric, r.n, fmt_mean_sd(r.mean, r.sd, 2),
             fmt_ci(r.ci_low, r.ci_high, 2), fmt_num(r.t_stat, 2), fmt_num(r.p_value, 3),
             ", ".join(map(str, r.seeds)))
            for r in pd.concat(paired).itertuples(index=False)
        ]  # fmt: skip
        out.append(md_table(["a - b", "metric", "n", "mean ± SD", "95% CI", "t", "p", "seeds"],
                            rows))  # fmt: skip
    return "\n".join(out)


def _verdict(low: float, high: float, mean: float) -> str:
    """Reading of a (fine-tuned - prompted) accuracy difference from its 95% CI."""
    if math.isnan(low):
        if mean == 0:
            return "no difference (1 seed)"
        return "fine-tuning higher (1 seed)" if mean > 0 else "prompting higher (1 seed)"
    if low > 0:
        return "fine-tuning beat prompting"
    if high < 0:
        return "prompting beat fine-tuning"
    return "no clear difference (CI spans 0)"


def accuracy_prompted_section(metrics: pd.DataFrame) -> str | None:
    """Did fine-tuning beat prompting, per method and pairs domain; None without the rows."""
    table = at.accuracy_prompted_summary(metrics)
    if table.empty:
        return None
    rows = []
    for (method, domain), g in table.groupby(["method", "domain"], sort=False):
        by = g.set_index("metric")
        gap = by.loc["finetuned_minus_prompted_pts"]
        rows.append((
            method, domain, int(gap["n"]), *(_cell(by, m, 2) for m in at.ACC_PROMPTED_METRICS[:4]),
            _cell(by, "finetuned_minus_prompted_pts", 2), fmt_ci(gap["ci_low"], gap["ci_high"], 2),
            _cell(by, "final_minus_prompted_pts", 2),
            _verdict(gap["ci_low"], gap["ci_high"], gap["mean"]),
        ))  # fmt: skip
    header = ["method", "domain", "n", "base, %", "prompted base, %", "fine-tuned (own stage), %",
              "final, %", "fine-tuned - prompted, pts", "95% CI", "final - prompted, pts",
              "reading"]  # fmt: skip
    return "\n".join([
        "## Did fine-tuning beat prompting? (task accuracy)",
        "",
        "Accuracy (%, mean ± SD over seeds) of the base model as is, the base model with "
        "`eval.prompted_k` solved training examples in front of every prompt, the model right "
        "after the domain's own stage, and after the last stage. Differences in points; > 0: the "
        "fine-tuned model beat prompting. The reading uses the 95% Student-t CI of the per-seed "
        "difference.",
        "",
        md_table(header, rows),
    ])  # fmt: skip
