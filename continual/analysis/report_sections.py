"""The sections of the markdown report, one function per section, each returning markdown.

Sections and the definitions their numbers follow (``L`` the stage x domain holdout-loss
matrix in nats, ``s(d)`` the stage that trains domain ``d``, ``T`` the last stage):

* runs found, settings and left-out runs (:func:`runs_section`);
* mean ± SD loss matrix per method (:func:`matrix_section`);
* forgetting / backbone drift per earlier domain: ``100 (L[T][d] - L[s(d)][d]) / L[s(d)][d]``,
  the delta NLL and max forgetting (Chaudhry et al. 2018) (:func:`forgetting_section`);
* final-stage summary metrics incl. BWT and FWT (Lopez-Paz & Ranzato 2017)
  (:func:`summary_section`; every method beside a multi-task reference is in
  :mod:`continual.analysis.reference_sections`);
* fine-tuning vs the prompted base model, ``L[s(d)][d]`` minus the prompted base NLL
  (:func:`prompted_section`);
* general-capability retention ``100 (L[k][g] - L[0][g]) / L[0][g]`` (:func:`retention_section`);
* lm-eval bits per byte per stage and the forgetting it shows (:func:`lm_eval_section`);
* gradient-norm stability (:func:`gradient_section`), paired differences between methods
  (:func:`paired_section`); the vendor-reported numbers are in
  :mod:`continual.analysis.published`.

Over seeds: mean, sample SD and two-sided 95% Student-t CI (:mod:`continual.metrics.stats`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from continual.analysis import eval_tables as et
from continual.analysis.markdown import (
    fmt_ci,
    fmt_mean_sd,
    fmt_num,
    md_table,
    metric_digits,
    stage_table,
)
from continual.analysis.reference_sections import REFERENCE
from continual.analysis.runs import (
    IncompleteRun,
    method_order,
    method_stage_labels,
    reference_methods,
    run_settings,
    stage_labels,
    trained_order,
    without_references,
)
from continual.analysis.tables import (
    forgetting_summary,
    gradient_summary,
    mean_matrix,
    paired_differences,
    paired_note,
    paired_reference,
)

__all__ = [
    "SETTINGS",
    "forgetting_section",
    "gradient_section",
    "lm_eval_section",
    "matrix_section",
    "paired_section",
    "prompted_section",
    "retention_section",
    "runs_section",
    "summary_section",
]

# config.yaml keys listed under "Runs found"
SETTINGS = ["model.name", "train.steps", "train.epochs", "train.batch_size", "train.block_len",
            "train.lr", "train.max_grad_norm", "eval.holdout_blocks", "eval.prompted_k",
            "eval.prompted_context_tokens", "eval.lm_eval_unit", "eval.lm_eval_limit",
            "eval.split"]  # fmt: skip


def runs_section(
    metrics: pd.DataFrame, incomplete: list[IncompleteRun], dropped: list[str], root: Path
) -> str:
    def rel(p: str | Path) -> str:
        try:
            return str(Path(p).relative_to(root)) or "."
        except ValueError:
            return str(p)

    runs = metrics.drop_duplicates("run_dir")
    rows = []
    for (seq, model, method), g in runs.groupby(["sequence", "model", "method"], sort=False):
        seeds = ", ".join(str(s) for s in sorted(g["seed"]))
        rows.append((method, seq, model, len(g), seeds))
    rank = method_order(metrics)
    rows.sort(key=lambda r: rank.index(r[0]) if r[0] in rank else len(rank))
    chains = without_references(metrics)
    order = {
        seq: " -> ".join(trained_order(g))
        for seq, g in (chains if len(chains) else metrics).groupby("sequence")
    }  # fmt: skip
    out = [
        "## Runs found",
        "",
        f"{runs['run_dir'].nunique()} complete run(s) under `{root}`.",
        "",
        md_table(["method", "sequence", "model", "runs", "seeds"], rows),
        "",
        "Trained order: " + "; ".join(f"`{s}`: {o}" for s, o in order.items()) + ".",
    ]
    references = reference_methods(metrics)
    if references:
        out += ["", f"{REFERENCE.capitalize()}(s), one stage on every domain at once for the "
                "chain's total steps (not a chain: no forgetting, BWT or FWT): "
                + ", ".join(f"`{m}`" for m in references) + "."]  # fmt: skip
    seen = run_settings(runs["run_dir"].tolist(), SETTINGS)
    settings = [f"`{k}={'/'.join(v)}`" for k, v in seen.items() if v]
    if settings:
        out += ["", "Settings (config.yaml): " + ", ".join(settings) + "."]
    if incomplete:
        out += ["", f"**Left out: {len(incomplete)} incomplete or failed run(s)**:", ""]
        for r in incomplete:
            done = "" if r.completed_stage is None else f", {r.completed_stage} stage(s) done"
            error = "" if not r.error else f": {r.error[:200]}"
            out.append(f"- `{rel(r.path)}`: status `{r.status}`{done}{error}")
    if dropped:
        out += ["", "Duplicate runs (same sequence, model, method, seed) left out, the most "
                "recently written one is used:", ""]  # fmt: skip
        out += [f"- `{rel(p)}`" for p in dropped]
    return "\n".join(out)


def matrix_section(metrics: pd.DataFrame) -> str:
    labels = stage_labels(metrics)
    seeds = metrics.groupby("method")["seed"].unique()
    out = [
        "## Holdout loss matrix (mean ± SD over seeds, nats/token)",
        "",
        "Row = after which stage, column = evaluated domain; each domain is scored with the "
        "model the method serves for it. SD is the sample SD (n-1); absent with one seed.",
    ]
    references = reference_methods(metrics)
    for method in method_order(metrics):
        mean, sd = mean_matrix(metrics, method)
        s = sorted(int(x) for x in seeds[method])
        note = f", {REFERENCE}" if method in references else ""
        out += ["", f"### {method} (n={len(s)}; seeds {', '.join(map(str, s))}{note})", ""]
        own = method_stage_labels(metrics, method) if method in references else labels
        out.append(stage_table(mean, sd, own))
    return "\n".join(out)


def forgetting_section(metrics: pd.DataFrame) -> str:
    table = forgetting_summary(metrics)
    out = [
        "## Forgetting / drift per earlier domain",
        "",
        "forgetting % = 100 x (L[T][d] - L[s(d)][d]) / L[s(d)][d], relative to the loss right "
        "after the domain's own stage s(d); delta NLL = the same difference in nats; max "
        "forgetting (Chaudhry et al. 2018, for losses) in nats. Positive = worse. For "
        "`modular_crma` these numbers are the backbone drift. Mean ± SD over seeds, 95% "
        "Student-t CI of the mean.",
        "",
    ]
    if table.empty:
        return "\n".join([*out, "No domain was trained before the last stage (T = 1)."])
    rows = []
    for r in table.itertuples(index=False):
        if r.n == 0:  # an average over no earlier domain (a one-stage chain)
            continue
        kind = "drift" if str(r.method).startswith("modular") else "forgetting"
        stage = "" if pd.isna(r.trained_at_stage) else int(r.trained_at_stage)
        rows.append((
            r.method, kind, r.domain, stage, r.n,
            fmt_mean_sd(r.forgetting_pct_mean, r.forgetting_pct_sd, 2),
            fmt_ci(r.forgetting_pct_ci_low, r.forgetting_pct_ci_high, 2),
            fmt_mean_sd(r.delta_nll_mean, r.delta_nll_sd, 4),
            fmt_ci(r.delta_nll_ci_low, r.delta_nll_ci_high, 4),
            fmt_mean_sd(r.max_forgetting_mean, r.max_forgetting_sd, 4),
        ))  # fmt: skip
    for method in reference_methods(metrics):  # no chain: nothing it could forget
        n = int(metrics.loc[metrics["method"] == method, "seed"].nunique())
        rows.append((method, REFERENCE, "—", "", n, *["—"] * 5))
    header = ["method", "quantity", "domain", "trained at stage", "n", "% (mean ± SD)",
              "% 95% CI", "delta NLL, nats (mean ± SD)", "delta NLL 95% CI",
              "max forgetting, nats"]  # fmt: skip
    return "\n".join([*out, md_table(header, rows)])


def summary_section(summary: pd.DataFrame, references: Sequence[str] = ()) -> str:
    """Metric x method table; a ``references`` method's metric that it has no value for
    (forgetting, BWT, FWT: not computed without a chain) reads ``—``."""
    methods = list(dict.fromkeys(summary["method"]))
    rows = []
    for metric, g in summary.groupby("metric", sort=False):
        by = g.set_index("method")
        d = metric_digits(str(metric))
        cells = []
        for m in methods:
            if m in references and (m not in by.index or by.at[m, "n"] == 0):
                cells.append("—")
            elif m in by.index:
                cells.append(
                    fmt_mean_sd(by.at[m, "mean"], by.at[m, "sd"], d) + f" (n={by.at[m, 'n']})"
                )
            else:
                cells.append("")
        rows.append([metric, *cells])
    note = (
        f" `—`: not computed for a {REFERENCE} (one stage on every domain, no chain)."
        if references else ""
    )  # fmt: skip
    return "\n".join([
        "## Final-stage summary metrics (mean ± SD over seeds)",
        "",
        "Units: `*_pct` in %, losses / delta NLL / bwt / fwt / max forgetting in nats; bwt and "
        "fwt keep the literature sign (higher = better, negative bwt = forgetting); `crma_*` "
        "are the constraint diagnostics after the last stage. 95% CIs are in `summary.csv`."
        + note,
        "",
        md_table(["metric", *methods], rows),
    ])  # fmt: skip


def _verdict(low: float, high: float, mean: float) -> str:
    """Reading of a (fine-tuned - prompted) difference from its 95% CI."""
    if math.isnan(low):
        return "fine-tuning lower (1 seed)" if mean < 0 else "prompting lower (1 seed)"
    if high < 0:
        return "fine-tuning beat prompting"
    if low > 0:
        return "prompting beat fine-tuning"
    return "no clear difference (CI spans 0)"


def prompted_section(metrics: pd.DataFrame) -> str | None:
    table = et.prompted_summary(metrics)
    if table.empty:
        return None
    rows = []
    for (method, domain), g in table.groupby(["method", "domain"], sort=False):
        by = g.set_index("metric")
        cell = {m: fmt_mean_sd(by.at[m, "mean"], by.at[m, "sd"]) for m in et.PROMPTED_METRICS}
        gap = by.loc["finetuned_minus_prompted"]
        rows.append((
            method, domain, int(gap["n"]), cell["base_nll"], cell["prompted_nll"],
            cell["finetuned_nll"], cell["final_nll"], cell["finetuned_minus_prompted"],
            fmt_ci(gap["ci_low"], gap["ci_high"]), cell["final_minus_prompted"],
            _verdict(gap["ci_low"], gap["ci_high"], gap["mean"]),
        ))  # fmt: skip
    header = ["method", "domain", "n", "base", "prompted base", "fine-tuned (own stage)", "final",
              "fine-tuned - prompted", "95% CI", "final - prompted", "reading"]  # fmt: skip
    return "\n".join([
        "## Fine-tuning vs prompting the base model",
        "",
        "Holdout loss (nats/token, mean ± SD over seeds) of the base model as is, the base model "
        "with `eval.prompted_k` training passages of the domain in its context (context tokens "
        "not scored), the model right after the domain's own stage, and after the last stage. "
        "Differences < 0: the fine-tuned model beat prompting; the reading uses the 95% "
        "Student-t CI of the paired (per-seed) difference.",
        "",
        md_table(header, rows),
    ])  # fmt: skip


def retention_section(metrics: pd.DataFrame) -> str | None:
    table = et.retention_summary(metrics)
    if table.empty:
        return None
    labels, references = stage_labels(metrics), reference_methods(metrics)
    rows = []
    for r in table.itertuples(index=False):
        own = method_stage_labels(metrics, r.method) if r.method in references else labels
        d, stage = metric_digits(r.metric), own.get(int(r.stage), str(r.stage))
        rows.append((r.method, r.eval_domain, stage, r.metric, r.n,
                     fmt_mean_sd(r.mean, r.sd, d), fmt_ci(r.ci_low, r.ci_high, d)))  # fmt: skip
    return "\n".join([
        "## General-capability retention",
        "",
        "The general holdout (never trained on) after every stage: its loss (`holdout_nll`, "
        "nats) and `retention_pct` = 100 (L[k][g] - L[0][g]) / L[0][g] (positive = worse than "
        "the base); `lm_eval_retention_pct/<metric>` is the same change for each extra lm-eval "
        "task (`eval.lm_eval_tasks`, same sign as the metric). Mean ± SD over seeds.",
        "",
        md_table(["method", "domain / task", "after", "metric", "n", "mean ± SD", "95% CI"], rows),
    ])  # fmt: skip


def lm_eval_section(metrics: pd.DataFrame) -> str | None:
    methods = set(metrics.loc[metrics["metric"] == et.LM_EVAL_BPB, "method"])
    if not methods:
        return None
    labels, references = stage_labels(metrics), reference_methods(metrics)
    out = [
        "## lm-eval holdout perplexity (bits per byte)",
        "",
        "Each domain's holdout scored by lm-eval (`loglikelihood_rolling` on the in-memory "
        "model, `eval.lm_eval_holdout=true`) after every stage: with `eval.lm_eval_unit=blocks` "
        "the blocks our loss scores (a check of the loss matrix above through lm-eval's code "
        "and units), with `documents` the whole holdout documents (the first "
        "`eval.lm_eval_limit` in split order). Mean ± SD over seeds.",
    ]
    for method in [m for m in method_order(metrics) if m in methods]:
        mean, sd = mean_matrix(metrics, method, et.LM_EVAL_BPB)
        n = int(metrics[metrics["method"] == method]["seed"].nunique())
        own = method_stage_labels(metrics, method) if method in references else labels
        out += ["", f"### {method} (n={n})", "", stage_table(mean, sd, own, digits=4)]
    forgetting = et.metric_forgetting_summary(metrics, et.LM_EVAL_BPB)
    header = ["method", "domain", "n", "% (mean ± SD)", "% 95% CI", "delta bits/byte (mean ± SD)",
              "delta 95% CI"]  # fmt: skip
    if not forgetting.empty:
        rows = []
        for (method, domain), g in forgetting.groupby(["method", "domain"], sort=False):
            by = g.set_index("metric")
            pct, delta = by.loc["forgetting_pct"], by.loc["delta"]
            rows.append((method, domain, int(pct["n"]),
                         fmt_mean_sd(pct["mean"], pct["sd"], 2),
                         fmt_ci(pct["ci_low"], pct["ci_high"], 2),
                         fmt_mean_sd(delta["mean"], delta["sd"], 4),
                         fmt_ci(delta["ci_low"], delta["ci_high"], 4)))  # fmt: skip
        out += [
            "",
            "Forgetting in bits per byte (same definition as for the loss: last stage vs right "
            "after the domain's own stage; positive = worse):",
            "",
            md_table(header, rows),
        ]
    return "\n".join(out)


def gradient_section(metrics: pd.DataFrame) -> str:
    grad = gradient_summary(metrics)
    out = [
        "## Gradient stability",
        "",
        "Global gradient norm before clipping, per stage (`grad_norm_*` rows): peak, mean, 95th "
        "percentile and spikes (steps above 5 x the stage median). Mean ± SD over stages and "
        "seeds (n = stages x seeds).",
        "",
    ]
    if grad.empty:
        return "\n".join([*out, "No gradient statistics in these runs."])
    rows = []
    for method in method_order(metrics):
        g = grad[grad["method"] == method].set_index("metric")
        if g.empty:
            continue
        cells = [
            fmt_mean_sd(g.at[s, "mean"], g.at[s, "sd"], 1 if s == "n_spikes" else 4)
            for s in ("peak", "mean", "p95", "n_spikes")
        ]
        rows.append([method, int(g["n"].max()), *cells])
    out.append(md_table(["method", "n", "peak", "mean", "p95", "spikes"], rows))
    methods = set(grad["method"])
    if {"lora", "crma"} <= methods:
        peak = grad[grad["metric"] == "peak"].set_index("method")["mean"]
        out += [
            "",
            f"CRMA mean peak / LoRA mean peak = {100 * peak['crma'] / peak['lora']:.1f}% "
            "(vendor-reported: 16-61%, i.e. a 39-84% peak reduction).",
        ]
    return "\n".join(out)


def paired_section(metrics: pd.DataFrame) -> str:
    reference = paired_reference(metrics)
    out = [
        "## Paired differences between methods (a - b, paired by seed)",
        "",
        "Student-t CI of the mean difference and two-sided paired t-test; only pairs sharing "
        ">= 2 seeds; no correction for multiple comparisons. Negative = method a forgets less / "
        "has lower loss." + paired_note(reference),
        "",
    ]
    tables = [
        paired_differences(metrics, m, reference=reference)
        for m in ("avg_forgetting_pct", "avg_delta_nll", "final_avg_loss")
    ]
    table = pd.concat([t for t in tables if not t.empty]) if any(len(t) for t in tables) else None
    if table is None:
        return "\n".join([*out, "Not available: no two methods share at least 2 seeds."])
    rows = []
    for r in table.itertuples(index=False):
        d = metric_digits(r.metric)
        rows.append((f"{r.method_a} - {r.method_b}", r.metric, r.n, fmt_mean_sd(r.mean, r.sd, d),
                     fmt_ci(r.ci_low, r.ci_high, d), fmt_num(r.t_stat, 2), fmt_num(r.p_value, 3),
                     ", ".join(map(str, r.seeds))))  # fmt: skip
    header = ["a - b", "metric", "n", "mean ± SD", "95% CI", "t", "p", "seeds"]
    return "\n".join([*out, md_table(header, rows)])
