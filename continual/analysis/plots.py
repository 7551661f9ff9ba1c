"""Matplotlib figures of a set of runs (each function returns a :class:`Figure`).

* :func:`plot_forgetting_curves`: every domain's holdout loss ``L[k][d]`` across stages ``k``,
  mean ± sample SD over seeds per method (the loss-matrix columns as curves);
* :func:`plot_accuracy_curves`: the same for the task accuracy ``100 A[k][d]`` (%) of the
  ``pairs`` domains (:mod:`continual.metrics.accuracy`);
* :func:`plot_heatmaps`: the mean stage x domain loss matrix per method;
* :func:`plot_grad_norms`: the global gradient norm (before clipping) per optimizer step and
  each stage's peak (:func:`continual.metrics.gradient_stability`).

Inputs are the tables of :func:`continual.analysis.runs.load_metrics` and
:func:`continual.analysis.runs.load_train_logs`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter
from matplotlib.transforms import blended_transform_factory

from continual import metrics as clm
from continual.analysis.runs import (
    check_unique_runs,
    domain_order,
    method_order,
    method_stage_labels,
    reference_methods,
    stage_labels,
)
from continual.analysis.tables import mean_matrix, stage_summary

__all__ = [
    "ACC_LABEL",
    "GRAD_LABEL",
    "NLL_LABEL",
    "plot_accuracy_curves",
    "plot_forgetting_curves",
    "plot_grad_norms",
    "plot_heatmaps",
]

NLL_LABEL = "holdout NLL (nats/token)"
ACC_LABEL = "task accuracy (%)"
GRAD_LABEL = "global gradient norm (L2, before clipping)"


def _colors(methods: Sequence[str]) -> dict[str, tuple[float, ...]]:
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def _styles(methods: Sequence[str]) -> dict[str, dict[str, object]]:
    """Colour, line style and marker per method, so that coinciding curves stay visible."""
    lines, markers = ["-", "--", "-.", ":"], ["o", "s", "^", "D", "v", "P"]
    colors = _colors(methods)
    return {
        m: {"color": colors[m], "linestyle": lines[i % 4], "marker": markers[i % 6]}
        for i, m in enumerate(methods)
    }


def _seed_counts(metrics: pd.DataFrame) -> dict[str, int]:
    return metrics.groupby("method")["seed"].nunique().to_dict()


def plot_forgetting_curves(metrics: pd.DataFrame) -> Figure:
    """Holdout loss of each domain across stages: one panel per evaluated domain.

    One line per method (mean over seeds, shaded band = ± sample SD); x = stage, labelled with
    the domain trained ("base", "after med", ...); the dotted line marks the domain's own stage.
    A multi-task reference (``method=joint``, one stage on every domain) is a dashed horizontal
    line at its final value (mean over seeds), not a curve.
    """
    check_unique_runs(metrics)
    return _stage_curves(metrics, stage_summary(metrics), domain_order(metrics), NLL_LABEL)


def plot_accuracy_curves(metrics: pd.DataFrame) -> Figure:
    """Task accuracy ``100 A[k][d]`` (%) of each ``pairs`` domain across stages ``k``.

    One panel per domain with ``accuracy`` rows, one line per method (mean over seeds, band =
    ± sample SD), laid out like :func:`plot_forgetting_curves`; higher = better, so forgetting
    shows as a drop after the dotted line (the domain's own stage). Raises ValueError when the
    runs have no accuracy rows.
    """
    check_unique_runs(metrics)
    summary = stage_summary(metrics, "accuracy")
    if summary.empty:
        raise ValueError("no accuracy rows to plot (the runs have no pairs domain)")
    summary[["mean", "sd"]] = 100.0 * summary[["mean", "sd"]].astype(float)
    present = set(summary["eval_domain"])
    ordered = [d for d in domain_order(metrics) if d in present]
    domains = ordered + sorted(present - set(ordered))
    return _stage_curves(metrics, summary, domains, ACC_LABEL)


def _stage_curves(
    metrics: pd.DataFrame, summary: pd.DataFrame, domains: Sequence[str], ylabel: str
) -> Figure:
    """One panel per domain of a per-stage ``summary`` (method, stage, eval_domain, mean, sd)."""
    labels = stage_labels(metrics)
    methods, n_seeds = method_order(metrics), _seed_counts(metrics)
    colors, styles = _colors(methods), _styles(methods)
    references = reference_methods(metrics)
    reference_domains = set(
        metrics.loc[metrics["method"].isin(references) & (metrics["metric"] == "final_loss"),
                    "eval_domain"]
    )  # fmt: skip
    trained = {
        lab.removeprefix("after "): k for k, lab in labels.items() if lab.startswith("after ")
    }
    ncols = 2 if len(domains) == 4 else min(len(domains), 3)
    nrows = math.ceil(len(domains) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.6 * ncols, 3.9 * nrows + 0.6), squeeze=False, layout="constrained"
    )
    stages = sorted(labels)
    for ax, domain in zip(axes.flat, domains, strict=False):
        for m in methods:
            s = summary[(summary["method"] == m) & (summary["eval_domain"] == domain)]
            s = s.sort_values("stage")
            if m in references:  # its final value across the whole chain
                if len(s):
                    y, sd = float(s["mean"].iloc[-1]), float(s["sd"].fillna(0).iloc[-1])
                    ax.axhline(y, color=colors[m], linestyle="--", linewidth=1.5,
                               label=f"{m} (multi-task reference, n={n_seeds[m]})")  # fmt: skip
                    ax.axhspan(y - sd, y + sd, color=colors[m], alpha=0.1, linewidth=0)
                continue
            x, y, sd = s["stage"].to_numpy(), s["mean"].to_numpy(), s["sd"].fillna(0).to_numpy()
            ax.plot(x, y, **styles[m], label=f"{m} (n={n_seeds[m]})")
            ax.fill_between(x, y - sd, y + sd, color=colors[m], alpha=0.2, linewidth=0)
        if domain in trained:
            ax.axvline(trained[domain], color="0.5", linestyle=":", linewidth=1)
            ax.set_title(f"{domain} (trained at stage {trained[domain]})")
        else:
            multitask = domain in reference_domains
            ax.set_title(f"{domain} (trained by the reference only)" if multitask else
                         f"{domain} (never trained)")  # fmt: skip
        ax.set_xticks(stages, [labels[k] for k in stages], rotation=25, ha="right")
        ax.set_xlabel("stage")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(domains) :]:
        ax.set_visible(False)
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles, names, loc="outside upper center", ncol=min(len(methods), 4),
        title="method: mean over seeds, band = ± SD", frameon=False,
    )  # fmt: skip
    return fig


def plot_heatmaps(metrics: pd.DataFrame) -> Figure:
    """Stage x domain mean holdout NLL, one annotated heatmap per method, shared colour scale."""
    methods, n_seeds, labels = method_order(metrics), _seed_counts(metrics), stage_labels(metrics)
    references = reference_methods(metrics)
    matrices = {m: mean_matrix(metrics, m) for m in methods}
    values = np.concatenate([mean.to_numpy().ravel() for mean, _ in matrices.values()])
    norm = Normalize(np.nanmin(values), np.nanmax(values))
    ncols = min(len(methods), 2)
    nrows = math.ceil(len(methods) / ncols)
    mean0 = next(iter(matrices.values()))[0]
    width = max(3.2, 0.95 * mean0.shape[1] + 1.6)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols + 1.2, (0.55 * mean0.shape[0] + 1.6) * nrows),
        squeeze=False, layout="constrained",
    )  # fmt: skip
    image = None
    for ax, m in zip(axes.flat, methods, strict=False):
        mean, sd = matrices[m]
        image = ax.imshow(mean.to_numpy(), cmap="viridis", norm=norm, aspect="auto")
        for (i, j), v in np.ndenumerate(mean.to_numpy()):
            if np.isnan(v):
                continue
            s = sd.to_numpy()[i, j]
            text = f"{v:.3f}" + ("" if np.isnan(s) else f"\n±{s:.3f}")
            color = "white" if norm(v) < 0.55 else "black"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=8)
        ax.set_xticks(range(mean.shape[1]), list(mean.columns))
        own = method_stage_labels(metrics, m) if m in references else labels
        ax.set_yticks(range(mean.shape[0]), [own.get(int(k), str(k)) for k in mean.index])
        ax.set_xlabel("evaluated domain")
        ax.set_title(f"{m} (n={n_seeds[m]} seeds" + (", reference)" if m in references else ")"))
    for ax in axes[:, 0]:
        ax.set_ylabel("stage")
    for ax in list(axes.flat)[len(methods) :]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes, label=f"mean {NLL_LABEL}", shrink=0.9)
    return fig


def plot_grad_norms(train_logs: pd.DataFrame, references: Sequence[str] = ()) -> Figure:
    """Global gradient norm per step (log y) and the per-stage peak, per method.

    Left: norm vs cumulative optimizer step: thin lines = seeds, thick = mean over seeds;
    dashed lines mark stage boundaries (a chain's). Right: each stage's peak norm (mean ± SD
    over seeds, from :func:`continual.metrics.gradient_stability`) of the chains, not of the
    ``references`` (methods whose one stage spans the chain, e.g. ``joint``); when both
    ``lora`` and ``crma`` runs are present the title gives CRMA's mean peak relative to LoRA's.
    """
    if train_logs.empty:
        raise ValueError("no training logs to plot")
    methods = method_order(train_logs)
    colors, styles = _colors(methods), _styles(methods)
    fig, (ax, ax_peak) = plt.subplots(
        1, 2, figsize=(13, 4.6), width_ratios=[2.2, 1], layout="constrained"
    )
    for m in methods:
        log = train_logs[train_logs["method"] == m]
        n = log["run_dir"].nunique()
        for _, run in log.groupby("run_dir"):
            ax.plot(run["global_step"], run["grad_norm"], color=colors[m], alpha=0.25, lw=0.8)
        mean = log.groupby("global_step")["grad_norm"].mean()
        style = {**styles[m], "marker": styles[m]["marker"] if len(mean) <= 60 else None}
        ax.plot(mean.index, mean.to_numpy(), **style, lw=1.8, ms=4, label=f"{m} (n={n})")
    chains = train_logs[~train_logs["method"].isin(references)]
    chains = chains if len(chains) else train_logs
    first = chains[chains["run_dir"] == chains["run_dir"].iloc[0]]
    starts = first.groupby(["stage", "domain"])["global_step"].agg(["min", "max"]).reset_index()
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    for row in starts.itertuples(index=False):
        if row.min > 1:
            ax.axvline(row.min - 0.5, color="0.4", linestyle="--", linewidth=1)
        ax.text((row.min + row.max) / 2, 0.98, f"stage {row.stage}: {row.domain}",
                transform=trans, ha="center", va="top", fontsize=8, color="0.3",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})  # fmt: skip
    ax.set_yscale("log")
    norms = train_logs["grad_norm"][train_logs["grad_norm"] > 0]
    if len(norms) and norms.max() / norms.min() < 20:  # under ~a decade: label plain numbers
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%.3g"))
    ax.set_xlabel("cumulative optimizer step")
    ax.set_ylabel(GRAD_LABEL)
    ax.set_title("Gradient norm per step")
    ax.grid(alpha=0.3, which="both")
    handles, names = ax.get_legend_handles_labels()
    fig.legend(
        handles, names, loc="outside upper center", ncol=min(len(methods), 4), frameon=False,
        title="method: thin lines = seeds, thick = mean over seeds",
    )  # fmt: skip

    peaks = [
        {"method": m, "run_dir": r, "stage": s, "domain": d,
         "peak": clm.gradient_stability(g["grad_norm"].tolist())["peak"]}
        for (m, r, s, d), g in train_logs.groupby(["method", "run_dir", "stage", "domain"])
    ]  # fmt: skip
    peaks_df = pd.DataFrame(peaks)
    stages = starts[["stage", "domain"]].drop_duplicates("stage")
    barred = [m for m in methods if m not in references] or methods
    width = 0.8 / len(barred)
    for i, m in enumerate(barred):
        p = peaks_df[peaks_df["method"] == m].groupby("stage")["peak"].agg(["mean", "std"])
        p = p.reindex(stages["stage"])
        x = np.arange(len(stages)) + (i - (len(barred) - 1) / 2) * width
        ax_peak.bar(x, p["mean"], width, yerr=p["std"].fillna(0), color=colors[m], label=m,
                    capsize=3)  # fmt: skip
    ax_peak.set_xticks(range(len(stages)), [f"{s}: {d}" for s, d in stages.itertuples(False)])
    ax_peak.set_xlabel("stage: trained domain")
    ax_peak.set_ylabel("peak gradient norm per stage")
    title = "Peak per stage (mean ± SD over seeds)"
    if {"lora", "crma"} <= set(methods):
        ratio = (
            peaks_df.loc[peaks_df["method"] == "crma", "peak"].mean()
            / peaks_df.loc[peaks_df["method"] == "lora", "peak"].mean()
        )
        title += f"\nCRMA peak = {100 * ratio:.0f}% of LoRA's"
    ax_peak.set_title(title)
    ax_peak.grid(alpha=0.3, axis="y")
    return fig
