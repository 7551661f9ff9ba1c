"""Finding run directories and loading their tables; the structure those tables describe.

A run directory (README, "What a run writes") holds ``metrics.csv`` (tidy,
:data:`continual.rundir.TIDY_COLUMNS`), ``run_info.json`` (``status`` becomes ``"complete"``
once every stage and the summary rows are written), ``config.yaml`` and ``train_log.csv``.
This module only reads those files: :func:`find_runs` / :func:`find_incomplete_runs` locate
them, :func:`load_metrics` / :func:`load_train_logs` concatenate their tables, and
:func:`method_order`, :func:`trained_order`, :func:`domain_order` and :func:`stage_labels`
read the sequence and display order out of a loaded table. Over-seed tables are in
:mod:`continual.analysis.tables`, figures in :mod:`continual.analysis.plots`.

Typical use (a sweep directory from ``python -m continual.run -m ...``)::

    from continual import analysis as an

    runs = an.find_runs("multirun/2026-11-24_10-00-00_med_legal_code")
    metrics = an.load_metrics(runs)
    an.forgetting_summary(metrics)
    an.plot_forgetting_curves(metrics).savefig("curves.png")
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from continual.errors import ContinualError
from continual.rundir import TIDY_COLUMNS

__all__ = [
    "METHOD_ORDER",
    "RUN_KEYS",
    "IncompleteRun",
    "NoRunsError",
    "check_unique_runs",
    "domain_order",
    "drop_duplicate_runs",
    "find_incomplete_runs",
    "find_runs",
    "is_reference",
    "label_methods",
    "load_metrics",
    "load_train_logs",
    "method_order",
    "method_stage_labels",
    "reference_methods",
    "run_settings",
    "stage_labels",
    "trained_order",
    "without_references",
]

# Preferred display order of the protocols (the baselines between the LoRA and CRMA ones, the
# multi-task reference last); any other method follows alphabetically.
METHOD_ORDER = [
    "lora", "frozen_lora", "replay", "ewc", "lwf", "olora", "crma", "modular_crma", "joint",
]  # fmt: skip
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
    ids = _info(run_dir).get("ids", {})
    return ids if isinstance(ids, dict) else {}


def load_metrics(paths: Iterable[str | os.PathLike[str]]) -> pd.DataFrame:
    """Concatenate the tidy ``metrics.csv`` tables of run directories.

    Columns: :data:`~continual.rundir.TIDY_COLUMNS` plus ``run_dir`` (the directory, a unique
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


def run_settings(
    run_dirs: Iterable[str | os.PathLike[str]], keys: Sequence[str]
) -> dict[str, list[str]]:
    """Every value (as text, in order of first appearance) of each dotted ``keys`` entry
    (e.g. ``"train.lr"``) in the runs' ``config.yaml``; runs without a readable one are skipped.
    """
    seen: dict[str, list[str]] = {k: [] for k in keys}
    for run_dir in run_dirs:
        try:
            cfg = yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        for key in keys:
            node: object = cfg
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None and str(node) not in seen[key]:
                seen[key].append(str(node))
    return seen


def check_unique_runs(metrics: pd.DataFrame) -> None:
    """Raise ValueError if several runs share a (method, seed): they would be averaged as one."""
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
    """Methods present in ``frame``, in display order (:data:`METHOD_ORDER`);
    a labelled arm such as ``crma_zclip_default`` sorts with its method (``crma``)."""

    def key(name: str) -> tuple[int, str]:
        base = name.split(" [")[0]
        ranks = [
            (len(m), i) for i, m in enumerate(METHOD_ORDER) if base == m or base.startswith(m + "_")
        ]
        return (max(ranks)[1] if ranks else len(METHOD_ORDER)), name

    return sorted(frame["method"].astype(str).unique(), key=key)


def trained_order(run: pd.DataFrame) -> list[str]:
    """The trained sequence of a run (stage_domain of stages 1..T, first run if several)."""
    stages = run[run["stage"] > 0].drop_duplicates("stage").sort_values("stage")
    return stages["stage_domain"].astype(str).tolist()


def is_reference(run: pd.DataFrame) -> bool:
    """Whether one run's rows are a multi-task reference, not a chain: a stage is not named
    after a domain the run evaluates (``method=joint`` trains one stage, ``joint``, on every
    domain at once; rows without ``holdout_nll`` count as a chain). Its forgetting, BWT and
    FWT are not computed; the report draws it as a reference line."""
    evaluated = set(run.loc[run["metric"] == "holdout_nll", "eval_domain"].astype(str))
    return bool(evaluated) and any(stage not in evaluated for stage in trained_order(run))


def reference_methods(metrics: pd.DataFrame) -> list[str]:
    """Methods with a reference run (:func:`is_reference`), in display order."""
    runs = "run_dir" if "run_dir" in metrics.columns else ["method", "seed"]
    found = {
        str(run["method"].iloc[0])
        for _, run in metrics.groupby(runs, sort=False)
        if is_reference(run)
    }
    return [m for m in method_order(metrics) if m in found] if found else []


def without_references(metrics: pd.DataFrame) -> pd.DataFrame:
    """The rows of the chains (``metrics`` without the methods of :func:`reference_methods`)."""
    return metrics[~metrics["method"].isin(reference_methods(metrics))]


def domain_order(metrics: pd.DataFrame) -> list[str]:
    """Evaluated domains: trained ones in sequence order, then holdout-only ones (``general``).
    A reference run's trained domains are those of its ``final_loss`` rows, in their order."""
    trained: list[str] = []
    for _, run in metrics.groupby("run_dir", sort=True):
        if is_reference(run):
            names = run.loc[run["metric"] == "final_loss", "eval_domain"].astype(str).tolist()
        else:
            names = trained_order(run)
        trained += [d for d in names if d not in trained]
    evaluated = metrics.loc[metrics["metric"] == "holdout_nll", "eval_domain"].astype(str)
    return [d for d in trained if d in set(evaluated)] + sorted(set(evaluated) - set(trained))


def method_stage_labels(metrics: pd.DataFrame, method: str) -> dict[int, str]:
    """:func:`stage_labels` for one method's rows: a reference's own stages, else the chains'."""
    if method in reference_methods(metrics):
        return stage_labels(metrics[metrics["method"] == method])
    return stage_labels(metrics)


def stage_labels(metrics: pd.DataFrame) -> dict[int, str]:
    """Stage -> label: ``"base"`` for stage 0, ``"after <domain>"`` after each trained stage.

    Falls back to ``"stage k"`` where runs disagree on the domain trained at stage ``k``.
    Reference runs (:func:`is_reference`) are left out unless there are only such runs.
    """
    labels = {0: "base"}
    chains = without_references(metrics)
    metrics = chains if len(chains) else metrics
    rows = metrics[metrics["stage"] > 0].drop_duplicates(["stage", "stage_domain"])
    for stage, group in rows.groupby("stage"):
        names = group["stage_domain"].astype(str).unique()
        labels[int(stage)] = f"after {names[0]}" if len(names) == 1 else f"stage {stage}"
    return labels
