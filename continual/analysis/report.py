"""Report over one run or a sweep: ``python -m continual.report <run-or-sweep-dir> [--out DIR]``.

Writes into ``--out`` (default ``<dir>/report``):

* ``summary.csv``: per method x final-stage scalar metric (``avg_forgetting_pct``, ``bwt``,
  ``forgetting_pct/<domain>``, ``crma_*`` ...): n, mean, sd, ci_low, ci_high over seeds
  (:func:`continual.stats.summarize_runs`);
* ``report.md``: runs found, mean loss matrices, forgetting/drift, summary metrics, and where
  the runs measured them fine-tuning vs the prompted base, general-capability retention and
  lm-eval bits per byte per stage (:mod:`continual.analysis.eval_tables`); gradient stability,
  paired differences between methods, and the vendor-reported numbers for side-by-side reading;
* ``forgetting_curves.png``, ``heatmaps.png`` and (when train logs exist) ``grad_norms.png``.

A path without complete runs prints one ``error:`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import yaml

from continual import analysis as an
from continual.analysis import eval_tables as et
from continual.errors import ContinualError
from continual.metrics.stats import summarize_runs

# From shared/research/published-numbers.md: self-reported by the CRMA vendor (ModelBrew AI),
# not replicated; different models, data, steps and hyper-parameters than any run here.
PUBLISHED = [
    ("Mistral-7B, 5 domains, 500 train / 100 holdout each, seeds 0/42/1234", "modular CRMA",
     "backbone drift", "-0.17% ± 0.17 (per seed -0.03, -0.10, -0.36)",
     "arXiv 2606.00382; HF dataset ModelBrew/sequential-forgetting-benchmark"),
    ("same", "naive sequential LoRA", "forgetting", "+42.96% ± 5.5 (38.1, 41.7, 49.0)", "same"),
    ("same", "modular vs frozen", "holdout-loss advantage", "1.99% ± 0.54", "vendor paper page"),
    ("Mistral-7B-v0.3, 4 domains med -> legal -> code -> fin, 1 run", "modular CRMA",
     "drift per domain", "-0.2, -0.1, -0.1, 0.0 (avg -0.1%)", "HF forum post 173860"),
    ("same", "naive sequential LoRA", "forgetting per domain", "+228, +593, +233 (avg +351.4%)",
     "same"),
    ("TinyLlama-1.1B-Chat, 4 domains", "modular CRMA", "drift", "-0.1%", "HF dataset"),
    ("TinyLlama-1.1B, 200 Alpaca rows, seed 42", "LoRA vs LoRA+CRMA",
     "final loss; peak / mean grad norm", "0.1658 vs 0.1651; 12.15 vs 5.75; 2.34 vs 2.07",
     "HF forum post 173691"),
    ("Mistral-7B single task", "LoRA vs CRMA", "holdout loss", "0.1519 vs 0.1426",
     "HF forum post 173818"),
    ("3 runs", "LoRA vs CRMA", "peak grad-norm reduction", "39-84%",
     "HF forum posts 173817/173818"),
    ("literature", "EWC", "forgetting (vendor's table)", "+58%", "HF forum post 173818"),
]  # fmt: skip


# --------------------------------------------------------------------------- formatting


def _num(x: float, digits: int) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _pm(mean: float, sd: float, digits: int = 3) -> str:
    """``mean ± sd`` (just the mean when the SD is undefined: one seed).

    Fixed-point with ``digits`` decimals, or 3 significant digits when the mean is a tiny
    non-zero value (e.g. a constraint error of 1e-8).
    """
    if mean is None or math.isnan(mean):
        return "n/a"
    spec = ".3g" if mean != 0 and abs(mean) < 10 ** (-digits) else f".{digits}f"
    return f"{mean:{spec}}" + ("" if sd is None or math.isnan(sd) else f" ± {sd:{spec}}")


def _ci(low: float, high: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(low) else f"[{low:.{digits}f}, {high:.{digits}f}]"


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table (``|`` in cells escaped)."""

    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _digits(metric: str) -> int:
    return 2 if "pct" in metric else 4


# --------------------------------------------------------------------------- sections


SETTINGS = ["model.name", "train.steps", "train.batch_size", "train.block_len", "train.lr",
            "train.max_grad_norm", "eval.holdout_blocks", "eval.prompted_k",
            "eval.prompted_context_tokens", "eval.lm_eval_unit", "eval.lm_eval_limit"]  # fmt: skip


def _settings(run_dirs: list[str]) -> str:
    """The main training settings from the runs' config.yaml (all values seen, per key)."""
    seen: dict[str, list[str]] = {k: [] for k in SETTINGS}
    for run_dir in run_dirs:
        try:
            cfg = yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        for key in SETTINGS:
            node: object = cfg
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None and str(node) not in seen[key]:
                seen[key].append(str(node))
    parts = [f"`{k}={'/'.join(v)}`" for k, v in seen.items() if v]
    return "Settings (config.yaml): " + ", ".join(parts) + "." if parts else ""


def _runs_section(
    metrics: pd.DataFrame, incomplete: list[an.IncompleteRun], dropped: list[str], root: Path
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
    rank = an.method_order(metrics)
    rows.sort(key=lambda r: rank.index(r[0]) if r[0] in rank else len(rank))
    order = {
        seq: " -> ".join(an.trained_order(g))
        for seq, g in metrics.groupby("sequence")
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
    settings = _settings(runs["run_dir"].tolist())
    if settings:
        out += ["", settings]
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


def _stage_table(
    mean: pd.DataFrame, sd: pd.DataFrame, labels: dict[int, str], digits: int = 3
) -> str:
    """A stage x domain table of mean ± SD cells, rows labelled "base", "after <domain>"."""
    rows = [
        [labels.get(int(k), str(k))]
        + [_pm(mean.at[k, c], sd.at[k, c], digits) for c in mean.columns]
        for k in mean.index
    ]
    return md_table(["stage", *mean.columns], rows)


def _matrix_section(metrics: pd.DataFrame) -> str:
    labels = an.stage_labels(metrics)
    seeds = metrics.groupby("method")["seed"].unique()
    out = [
        "## Holdout loss matrix (mean ± SD over seeds, nats/token)",
        "",
        "Row = after which stage, column = evaluated domain; each domain is scored with the "
        "model the method serves for it. SD is the sample SD (n-1); absent with one seed.",
    ]
    for method in an.method_order(metrics):
        mean, sd = an.mean_matrix(metrics, method)
        s = sorted(int(x) for x in seeds[method])
        out += ["", f"### {method} (n={len(s)}; seeds {', '.join(map(str, s))})", ""]
        out.append(_stage_table(mean, sd, labels))
    return "\n".join(out)


def _forgetting_section(metrics: pd.DataFrame) -> str:
    table = an.forgetting_summary(metrics)
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
            _pm(r.forgetting_pct_mean, r.forgetting_pct_sd, 2),
            _ci(r.forgetting_pct_ci_low, r.forgetting_pct_ci_high, 2),
            _pm(r.delta_nll_mean, r.delta_nll_sd, 4),
            _ci(r.delta_nll_ci_low, r.delta_nll_ci_high, 4),
            _pm(r.max_forgetting_mean, r.max_forgetting_sd, 4),
        ))  # fmt: skip
    header = ["method", "quantity", "domain", "trained at stage", "n", "% (mean ± SD)",
              "% 95% CI", "delta NLL, nats (mean ± SD)", "delta NLL 95% CI",
              "max forgetting, nats"]  # fmt: skip
    return "\n".join([*out, md_table(header, rows)])


def _summary_section(summary: pd.DataFrame) -> str:
    methods = list(dict.fromkeys(summary["method"]))
    rows = []
    for metric, g in summary.groupby("metric", sort=False):
        by = g.set_index("method")
        d = _digits(str(metric))
        rows.append(
            [metric]
            + [
                _pm(by.at[m, "mean"], by.at[m, "sd"], d) + f" (n={by.at[m, 'n']})"
                if m in by.index
                else ""
                for m in methods
            ]
        )
    return "\n".join([
        "## Final-stage summary metrics (mean ± SD over seeds)",
        "",
        "Units: `*_pct` in %, losses / delta NLL / bwt / fwt / max forgetting in nats; bwt and "
        "fwt keep the literature sign (higher = better, negative bwt = forgetting); `crma_*` "
        "are the constraint diagnostics after the last stage. 95% CIs are in `summary.csv`.",
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


def _prompted_section(metrics: pd.DataFrame) -> str | None:
    table = et.prompted_summary(metrics)
    if table.empty:
        return None
    rows = []
    for (method, domain), g in table.groupby(["method", "domain"], sort=False):
        by = g.set_index("metric")
        cell = {m: _pm(by.at[m, "mean"], by.at[m, "sd"]) for m in et.PROMPTED_METRICS}
        gap = by.loc["finetuned_minus_prompted"]
        rows.append((
            method, domain, int(gap["n"]), cell["base_nll"], cell["prompted_nll"],
            cell["finetuned_nll"], cell["final_nll"], cell["finetuned_minus_prompted"],
            _ci(gap["ci_low"], gap["ci_high"]), cell["final_minus_prompted"],
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


def _retention_section(metrics: pd.DataFrame) -> str | None:
    table = et.retention_summary(metrics)
    if table.empty:
        return None
    labels = an.stage_labels(metrics)
    rows = [
        (r.method, r.eval_domain, labels.get(int(r.stage), str(r.stage)), r.metric, r.n,
         _pm(r.mean, r.sd, _digits(r.metric)), _ci(r.ci_low, r.ci_high, _digits(r.metric)))
        for r in table.itertuples(index=False)
    ]  # fmt: skip
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


def _lm_eval_section(metrics: pd.DataFrame) -> str | None:
    methods = set(metrics.loc[metrics["metric"] == et.LM_EVAL_BPB, "method"])
    if not methods:
        return None
    labels = an.stage_labels(metrics)
    out = [
        "## lm-eval holdout perplexity (bits per byte)",
        "",
        "Each domain's holdout scored by lm-eval (`loglikelihood_rolling` on the in-memory "
        "model, `eval.lm_eval_holdout=true`) after every stage: with `eval.lm_eval_unit=blocks` "
        "the blocks our loss scores (a check of the loss matrix above through lm-eval's code "
        "and units), with `documents` the whole holdout documents (the first "
        "`eval.lm_eval_limit` in split order). Mean ± SD over seeds.",
    ]
    for method in [m for m in an.method_order(metrics) if m in methods]:
        mean, sd = an.mean_matrix(metrics, method, et.LM_EVAL_BPB)
        n = int(metrics[metrics["method"] == method]["seed"].nunique())
        out += ["", f"### {method} (n={n})", "", _stage_table(mean, sd, labels, digits=4)]
    forgetting = et.metric_forgetting_summary(metrics, et.LM_EVAL_BPB)
    header = ["method", "domain", "n", "% (mean ± SD)", "% 95% CI", "delta bits/byte (mean ± SD)",
              "delta 95% CI"]  # fmt: skip
    if not forgetting.empty:
        rows = []
        for (method, domain), g in forgetting.groupby(["method", "domain"], sort=False):
            by = g.set_index("metric")
            pct, delta = by.loc["forgetting_pct"], by.loc["delta"]
            rows.append((method, domain, int(pct["n"]), _pm(pct["mean"], pct["sd"], 2),
                         _ci(pct["ci_low"], pct["ci_high"], 2), _pm(delta["mean"], delta["sd"], 4),
                         _ci(delta["ci_low"], delta["ci_high"], 4)))  # fmt: skip
        out += [
            "",
            "Forgetting in bits per byte (same definition as for the loss: last stage vs right "
            "after the domain's own stage; positive = worse):",
            "",
            md_table(header, rows),
        ]
    return "\n".join(out)


def _gradient_section(metrics: pd.DataFrame) -> str:
    grad = an.gradient_summary(metrics)
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
    for method in an.method_order(metrics):
        g = grad[grad["method"] == method].set_index("metric")
        if g.empty:
            continue
        cells = [
            _pm(g.at[s, "mean"], g.at[s, "sd"], 1 if s == "n_spikes" else 4)
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


def _paired_section(metrics: pd.DataFrame) -> str:
    out = [
        "## Paired differences between methods (a - b, paired by seed)",
        "",
        "Student-t CI of the mean difference and two-sided paired t-test; only pairs sharing "
        ">= 2 seeds; no correction for multiple comparisons. Negative = method a forgets less / "
        "has lower loss.",
        "",
    ]
    tables = [
        an.paired_differences(metrics, m) for m in ("avg_forgetting_pct", "avg_delta_nll",
                                                   "final_avg_loss")
    ]  # fmt: skip
    table = pd.concat([t for t in tables if not t.empty]) if any(len(t) for t in tables) else None
    if table is None:
        return "\n".join([*out, "Not available: no two methods share at least 2 seeds."])
    rows = [
        (f"{r.method_a} - {r.method_b}", r.metric, r.n, _pm(r.mean, r.sd, _digits(r.metric)),
         _ci(r.ci_low, r.ci_high, _digits(r.metric)), _num(r.t_stat, 2), _num(r.p_value, 3),
         ", ".join(map(str, r.seeds)))
        for r in table.itertuples(index=False)
    ]  # fmt: skip
    header = ["a - b", "metric", "n", "mean ± SD", "95% CI", "t", "p", "seeds"]
    return "\n".join([*out, md_table(header, rows)])


def _published_section() -> str:
    return "\n".join([
        "## Published numbers (vendor-reported, for side-by-side reading only)",
        "",
        "**Self-reported by the CRMA vendor (ModelBrew AI); no public code, no independent "
        "replication.** Models, data, steps and hyper-parameters differ from the runs above, so "
        "read these next to our numbers, not as a like-for-like comparison. Source: "
        "`shared/research/published-numbers.md`.",
        "",
        md_table(["setting", "method", "metric", "value", "source"], PUBLISHED),
    ])  # fmt: skip


# --------------------------------------------------------------------------- driver


def summary_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per method x final-stage scalar metric: n, mean, sd, ci_low, ci_high over seeds."""
    runs = an.run_summaries(metrics)
    table = summarize_runs(runs, by=["method"])
    rank = an.method_order(metrics)
    table["_m"] = table["method"].map(rank.index)
    return table.sort_values("_m", kind="stable").drop(columns="_m").reset_index(drop=True)


def build_report(path: str | Path, out: str | Path | None = None) -> Path:
    """Analyse every complete run under ``path``; write the report files into ``out``.

    Returns the output directory. Raises :class:`continual.analysis.NoRunsError` when there
    is no complete run.
    """
    root = Path(path)
    runs = an.find_runs(root)
    incomplete = an.find_incomplete_runs(root)
    if not runs:
        extra = f" ({len(incomplete)} incomplete run(s) found)" if incomplete else ""
        raise an.NoRunsError(
            f"no complete run under {root}{extra}: expected run directories with "
            "metrics.csv and a run_info.json whose status is 'complete'"
        )
    out_dir = Path(out) if out is not None else root / "report"
    out_dir.mkdir(parents=True, exist_ok=True)

    metrics, dropped = an.drop_duplicate_runs(an.label_methods(an.load_metrics(runs)))
    kept = [Path(p) for p in metrics["run_dir"].unique()]
    logs = an.label_methods(an.load_train_logs(kept))

    summary = summary_table(metrics)
    summary.to_csv(out_dir / "summary.csv", index=False)

    figures = {
        "forgetting_curves.png": an.plot_forgetting_curves(metrics),
        "heatmaps.png": an.plot_heatmaps(metrics),
    }
    if not logs.empty:
        figures["grad_norms.png"] = an.plot_grad_norms(logs)
    for name, fig in figures.items():
        fig.savefig(out_dir / name, dpi=130)
        plt.close(fig)

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    depth = [_prompted_section(metrics), _retention_section(metrics), _lm_eval_section(metrics)]
    depth = [section for section in depth if section]
    sections = [
        f"# Continual-learning report\n\nSource: `{root}` (generated {stamp} by "
        "`python -m continual.report`). Losses are holdout mean token NLL in nats.",
        _runs_section(metrics, incomplete, dropped, root),
        _matrix_section(metrics),
        _forgetting_section(metrics),
        _summary_section(summary),
        *depth,
        _gradient_section(metrics),
        _paired_section(metrics),
        _published_section(),
        "## Figures\n\n" + "\n\n".join(f"![{n[:-4]}]({n})" for n in figures),
    ]
    (out_dir / "report.md").write_text("\n\n".join(sections) + "\n")
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m continual.report",
        description="Summarise a run or a sweep of runs: tables (report.md, summary.csv) and "
        "figures (forgetting curves, loss heatmaps, gradient norms).",
    )
    parser.add_argument("path", type=Path, help="a run directory or a folder of runs (a sweep)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (<path>/report)")
    args = parser.parse_args(argv)
    matplotlib.use("Agg")  # files only, never a window
    try:
        out = build_report(args.path, args.out)
    except ContinualError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report written to {out}/report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
