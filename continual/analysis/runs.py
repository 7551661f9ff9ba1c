"""Cross-run analysis: find run directories, load their tables, aggregate over seeds, plot.

A run directory (README, "What a run writes") holds ``metrics.csv`` (tidy,
:data:`continual.results.TIDY_COLUMNS`), ``run_info.json`` (``status`` becomes ``"complete"``
once every stage and the summary rows are written) and ``train_log.csv``. This module only reads
those files: the metrics come from :mod:`continual.metrics`, the multi-seed statistics (sample
SD, Student-t intervals, paired tests) from :mod:`continual.metrics.stats`.

Typical use (a sweep directory from ``python -m continual.run -m ...``)::

    runs = find_runs("multirun/2026-11-24_10-00-00_med_legal_code")
    metrics = load_metrics(runs)
    forgetting_summary(metrics)
    plot_forgetting_curves(metrics).savefig("curves.png")
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter
from matplotlib.transforms import blended_transform_factory

from continual import metrics as clm
from continual.errors import ContinualError
from continual.metrics.stats import paired_difference, summarize_runs
from continual.rundir import PROMPTED_GAP, TIDY_COLUMNS, loss_matrix

__all__ = [
    "NLL_LABEL",
    "IncompleteRun",
    "NoRunsError",
    "domain_order",
    "drop_duplicate_runs",
    "find_incomplete_runs",
    "find_runs",
    "forgetting_summary",
    "gradient_summary",
    "label_methods",
    "load_metrics",
    "load_train_logs",
    "loss_matrices",
    "mean_matrix",
    "stage_summary",
    "method_order",
    "paired_differences",
    "plot_forgetting_curves",
    "plot_grad_norms",
    "plot_heatmaps",
    "run_summaries",
    "stage_labels",
    "trained_order",
]

NLL_LABEL = "holdout NLL (nats/token)"
GRAD_LABEL = "global gradient norm (L2, before clipping)"
# Preferred display order of the protocols; any other method follows alphabetically.
METHOD_ORDER = ["lora", "frozen_lora", "crma", "modular_crma"]
GRAD_STATS = ["peak", "mean", "p95", "median", "n_spikes"]
RUN_KEYS = ["sequence", "model", "method", "seed"]
_PRUNE = {"adapters", "node_modules", "__pycache__"}


class NoRunsError(ContinualError):
    """A path holds no complete run directory."""


@dataclass(frozen=True)
class IncompleteRun:
    """A run directory that is not (yet) complete: left out of every analysis."""

    path: Path
    status: str  # run_info.json status ("running" may also mean killed), or why unusable
    completed_stage: int | None  # stages committed (run_info.json or progress.json)
    error: str | None = None  # the error recorded in run_info.json, if any


# --------------------------------------------------------------------------- finding runs


def _scan(path: str | os.PathLike[str]) -> tuple[list[Path], list[IncompleteRun]]:
    root = Path(path)
    if not root.exists():
        raise NoRunsError(f"{root} does not exist")
    if not root.is_dir():
        raise NoRunsError(f"{root} is not a directory (give a run or sweep directory)")
    complete: list[Path] = []
    incomplete: list[IncompleteRun] = []
    for current, dirs, files in os.walk(root):
        here = Path(current)
        if "run_info.json" in files:
            dirs[:] = []  # a run directory holds no further runs
            info = _info(here)
            status = str(info.get("status", "no status"))
            if status == "complete" and "metrics.csv" in files:
                complete.append(here)
                continue
            if status == "complete":
                status = "complete but metrics.csv is missing"
            stage = info.get("completed_stage", _completed_stage(here))
            error = info.get("error")
            incomplete.append(
                IncompleteRun(here, status, None if stage is None else int(stage),
                              None if error is None else str(error))
            )  # fmt: skip
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _PRUNE)
    return sorted(complete), sorted(incomplete, key=lambda r: r.path)


def _info(run_dir: Path) -> dict[str, object]:
    try:
        info = json.loads((run_dir / "run_info.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return {"status": f"unreadable run_info.json ({exc.__class__.__name__})"}
    return info if isinstance(info, dict) else {"status": "run_info.json is not an object"}


def _completed_stage(run_dir: Path) -> int | None:
    try:
        return int(json.loads((run_dir / "progress.json").read_text())["completed_stage"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find_runs(path: str | os.PathLike[str]) -> list[Path]:
    """Complete run directories at or below ``path`` (a run dir, a sweep, or any folder).

    A run directory has ``metrics.csv`` and ``run_info.json``; only those whose run_info
    ``status`` is ``"complete"`` are returned (sorted). See :func:`find_incomplete_runs` for the
    others. Hidden folders and ``adapters/`` are not searched. Raises :class:`NoRunsError`
    when ``path`` does not exist.
    """
    return _scan(path)[0]


def find_incomplete_runs(path: str | os.PathLike[str]) -> list[IncompleteRun]:
    """Run directories below ``path`` that are not complete (running, crashed or failed)."""
    return _scan(path)[1]


# --------------------------------------------------------------------------- loading


def _run_ids(run_dir: Path) -> dict[str, object]:
    try:
        ids = json.loads((run_dir / "run_info.json").read_text()).get("ids", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        ids = {}
    return ids if isinstance(ids, dict) else {}


def load_metrics(paths: Iterable[str | os.PathLike[str]]) -> pd.DataFrame:
    """Concatenate the tidy ``metrics.csv`` tables of run directories.

    Columns: :data:`~continual.results.TIDY_COLUMNS` plus ``run_dir`` (the directory, a unique
    run key: ``run`` names repeat across sweeps). Raises ValueError if a table lacks columns.
    """
    frames = []
    for p in paths:
        run_dir = Path(p)
        frame = pd.read_csv(run_dir / "metrics.csv")
        missing = [c for c in TIDY_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"{run_dir / 'metrics.csv'} lacks column(s) {missing}")
        frame = frame[TIDY_COLUMNS].copy()
        frame["run_dir"] = str(run_dir)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*TIDY_COLUMNS, "run_dir"])
    out = pd.concat(frames, ignore_index=True)
    out["stage"] = out["stage"].astype(int)
    out["seed"] = out["seed"].astype(int)
    out["value"] = out["value"].astype(float)
    return out


def load_train_logs(paths: Iterable[str | os.PathLike[str]]) -> pd.DataFrame:
    """Concatenate the ``train_log.csv`` tables (runs without one are skipped).

    Columns as written (``stage``, ``domain``, ``global_step``: the optimizer step counted
    across stages, ``step`` within the stage, ``loss``, ``grad_norm``, ``lr``; ``global_step``
    is added for logs without it) plus ``run``, ``run_dir``, ``sequence``, ``model``,
    ``method``, ``seed`` from run_info.json.
    """
    frames = []
    for p in paths:
        run_dir = Path(p)
        if not (run_dir / "train_log.csv").is_file():
            continue
        log = pd.read_csv(run_dir / "train_log.csv").sort_values(["stage", "step"], kind="stable")
        ids = _run_ids(run_dir)
        if not ids and (run_dir / "metrics.csv").is_file():
            first = pd.read_csv(run_dir / "metrics.csv", nrows=1)
            ids = first.iloc[0].to_dict() if len(first) else {}
        for key in ["run", *RUN_KEYS]:
            log[key] = ids.get(key, run_dir.name if key == "run" else None)
        log["run_dir"] = str(run_dir)
        if "global_step" not in log.columns:  # older logs: count the steps across stages
            log["global_step"] = np.arange(1, len(log) + 1)
        frames.append(log)
    if not frames:
        return pd.DataFrame(
            columns=["stage", "domain", "step", "loss", "grad_norm", "lr", "run", *RUN_KEYS,
                     "run_dir", "global_step"]
        )  # fmt: skip
    out = pd.concat(frames, ignore_index=True)
    out["seed"] = pd.to_numeric(out["seed"], errors="coerce").astype("Int64")
    return out


def label_methods(frame: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``frame`` whose ``method`` names the sequence/model when runs mix several.

    With one (sequence, model) pair the frame is returned unchanged (as a copy); otherwise
    ``method`` becomes e.g. ``"lora [med_code, tiny_random]"`` so that groups never mix chains.
    Works on metrics and train-log tables alike.
    """
    out = frame.copy()
    if out.empty:
        return out
    parts = [c for c in ("sequence", "model") if c in out.columns and out[c].nunique() > 1]
    if parts:
        suffix = out[parts].astype(str).agg(", ".join, axis=1)
        out["method"] = out["method"].astype(str) + " [" + suffix + "]"
    return out


def drop_duplicate_runs(metrics: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Keep one run per (sequence, model, method, seed): the most recently written one.

    Returns the filtered table and the ``run_dir`` values left out (e.g. a repeated sweep).
    """
    runs = metrics.drop_duplicates("run_dir")[[*RUN_KEYS, "run_dir"]].copy()

    def mtime(run_dir: str) -> float:
        try:
            return os.path.getmtime(Path(run_dir) / "metrics.csv")
        except OSError:
            return 0.0

    runs["_mtime"] = runs["run_dir"].map(mtime)
    runs = runs.sort_values(["_mtime", "run_dir"])
    keep = runs.drop_duplicates(RUN_KEYS, keep="last")["run_dir"]
    dropped = sorted(set(runs["run_dir"]) - set(keep))
    return metrics[metrics["run_dir"].isin(keep)].copy(), dropped


def _check_unique(metrics: pd.DataFrame) -> None:
    key = ["method", "seed"]
    per = metrics.drop_duplicates("run_dir").groupby(key)["run_dir"].nunique()
    dup = per[per > 1]
    if len(dup):
        raise ValueError(
            f"several runs share (method, seed) {list(dup.index)}; point at one sweep, or use "
            "drop_duplicate_runs / label_methods first"
        )


# --------------------------------------------------------------------------- structure


def method_order(frame: pd.DataFrame) -> list[str]:
    """Methods present in ``frame``, in display order (lora, frozen_lora, crma, modular_crma)."""

    def key(name: str) -> tuple[int, str]:
        base = name.split(" [")[0]
        rank = METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER)
        return rank, name

    return sorted(frame["method"].astype(str).unique(), key=key)


def trained_order(run: pd.DataFrame) -> list[str]:
    """The trained sequence of a run (stage_domain of stages 1..T, first run if several)."""
    stages = run[run["stage"] > 0].drop_duplicates("stage").sort_values("stage")
    return stages["stage_domain"].astype(str).tolist()


def domain_order(metrics: pd.DataFrame) -> list[str]:
    """Evaluated domains: trained ones in sequence order, then holdout-only ones (``general``)."""
    trained: list[str] = []
    for _, run in metrics.groupby("run_dir", sort=True):
        trained += [d for d in trained_order(run) if d not in trained]
    evaluated = metrics.loc[metrics["metric"] == "holdout_nll", "eval_domain"].astype(str)
    return [d for d in trained if d in set(evaluated)] + sorted(set(evaluated) - set(trained))


def stage_labels(metrics: pd.DataFrame) -> dict[int, str]:
    """Stage -> label: ``"base"`` for stage 0, ``"after <domain>"`` after each trained stage.

    Falls back to ``"stage k"`` where runs disagree on the domain trained at stage ``k``.
    """
    labels = {0: "base"}
    rows = metrics[metrics["stage"] > 0].drop_duplicates(["stage", "stage_domain"])
    for stage, group in rows.groupby("stage"):
        names = group["stage_domain"].astype(str).unique()
        labels[int(stage)] = f"after {names[0]}" if len(names) == 1 else f"stage {stage}"
    return labels


# --------------------------------------------------------------------------- aggregation


def loss_matrices(metrics: pd.DataFrame) -> dict[tuple[str, int], pd.DataFrame]:
    """Stage x domain holdout-NLL matrix (nats) of every run, keyed by (method, seed).

    Columns follow :func:`domain_order`. Raises ValueError if two runs share (method, seed).
    """
    _check_unique(metrics)
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

    Computed with :func:`continual.stats.summarize_runs`; the SD is NaN with a single seed.
    """
    runs = metrics[metrics["method"] == method]
    _check_unique(runs)
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
    """Base names of the scalar metrics that :func:`continual.metrics.summary_metrics` writes."""
    probe = clm.loss_matrix(np.ones((3, 3)), ["a", "b", "g"])
    names = {k.split("/")[0] for k in clm.summary_metrics(probe, ["a", "b"], general="g")}
    return names | {PROMPTED_GAP}  # appended by continual.experiment.summarise


def run_summaries(metrics: pd.DataFrame) -> pd.DataFrame:
    """Scalar summary metrics of every run at its final stage, one row per run x metric.

    Read from the summary rows the recipe appends at the last stage (``metric`` is
    ``avg_forgetting_pct``, ``bwt``, ... for ``eval_domain == "all"`` and ``forgetting_pct/med``
    style names for per-domain rows), plus the final-stage method diagnostics (``crma_*``).
    For a run without summary rows they are recomputed with
    :func:`continual.metrics.summary_metrics`. Columns: run, run_dir, sequence, model, method,
    seed, metric, value.
    """
    names = _summary_names()
    out = []
    for run_dir, run in metrics.groupby("run_dir", sort=True):
        ids = run.iloc[0][["run", *RUN_KEYS]].to_dict()
        last = int(run["stage"].max())
        final = run[run["stage"] == last]
        rows = final[final["metric"].isin(names)]
        if rows.empty:
            order = trained_order(run)
            matrix = loss_matrix(run)
            general = next((c for c in matrix.columns if c not in order), None)
            values = clm.summary_metrics(matrix, order, general=general)
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
    _check_unique(metrics)
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
    metrics: pd.DataFrame, metric: str = "avg_forgetting_pct", min_seeds: int = 2
) -> pd.DataFrame:
    """Paired (by seed) differences ``a - b`` of a final-stage metric for every method pair.

    Uses :func:`continual.stats.paired_difference` (Student-t CI, two-sided paired t-test) for
    pairs sharing at least ``min_seeds`` seeds with values. Columns: method_a, method_b, metric,
    n, mean, sd, ci_low, ci_high, t_stat, p_value, seeds.
    """
    cols = ["method_a", "method_b", "metric", "n", "mean", "sd", "ci_low", "ci_high",
            "t_stat", "p_value", "seeds"]  # fmt: skip
    runs = run_summaries(metrics)
    runs = runs[(runs["metric"] == metric) & runs["value"].notna()]
    rows = []
    for a, b in combinations(method_order(runs) if len(runs) else [], 2):
        shared = set(runs.loc[runs["method"] == a, "seed"]) & set(
            runs.loc[runs["method"] == b, "seed"]
        )
        if len(shared) < min_seeds:
            continue
        res = paired_difference(runs, a, b, metric)
        rows.append({k: res[k] for k in cols if k in res} | {"method_a": a, "method_b": b})
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------- plots


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
    """
    _check_unique(metrics)
    summary = stage_summary(metrics)
    domains, labels = domain_order(metrics), stage_labels(metrics)
    methods, n_seeds = method_order(metrics), _seed_counts(metrics)
    colors, styles = _colors(methods), _styles(methods)
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
            x, y, sd = s["stage"].to_numpy(), s["mean"].to_numpy(), s["sd"].fillna(0).to_numpy()
            ax.plot(x, y, **styles[m], label=f"{m} (n={n_seeds[m]})")
            ax.fill_between(x, y - sd, y + sd, color=colors[m], alpha=0.2, linewidth=0)
        if domain in trained:
            ax.axvline(trained[domain], color="0.5", linestyle=":", linewidth=1)
            ax.set_title(f"{domain} (trained at stage {trained[domain]})")
        else:
            ax.set_title(f"{domain} (never trained)")
        ax.set_xticks(stages, [labels[k] for k in stages], rotation=25, ha="right")
        ax.set_xlabel("stage")
        ax.set_ylabel(NLL_LABEL)
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
        ax.set_yticks(range(mean.shape[0]), [labels.get(int(k), str(k)) for k in mean.index])
        ax.set_xlabel("evaluated domain")
        ax.set_title(f"{m} (n={n_seeds[m]} seeds)")
    for ax in axes[:, 0]:
        ax.set_ylabel("stage")
    for ax in list(axes.flat)[len(methods) :]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes, label=f"mean {NLL_LABEL}", shrink=0.9)
    return fig


def plot_grad_norms(train_logs: pd.DataFrame) -> Figure:
    """Global gradient norm per step (log y) and the per-stage peak, per method.

    Left: norm vs cumulative optimizer step: thin lines = seeds, thick = mean over seeds;
    dashed lines mark stage boundaries. Right: each stage's peak norm (mean ± SD over seeds,
    from :func:`continual.metrics.gradient_stability`); when both ``lora`` and ``crma`` runs are
    present the title gives CRMA's mean peak relative to LoRA's.
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
    first = train_logs[train_logs["run_dir"] == train_logs["run_dir"].iloc[0]]
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
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        p = peaks_df[peaks_df["method"] == m].groupby("stage")["peak"].agg(["mean", "std"])
        p = p.reindex(stages["stage"])
        x = np.arange(len(stages)) + (i - (len(methods) - 1) / 2) * width
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
