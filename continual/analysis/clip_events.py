"""How often gradient clipping fired, per run and stage, and how hard it cut.

A step counts as clipped when the global gradient norm the optimizer used (after clipping) is
below the norm before clipping by more than a relative 1e-4 (``clip_grad_norm_`` scales by
``max_norm / (norm + 1e-6)``, so a clipped step lands a hair under the limit). Its scale is
``after / before``.

Runs that log ``grad_norm_clipped`` in ``train_log.csv`` are read as logged. For older runs the
clipper of :mod:`continual.train.clipping` is replayed on the logged pre-clip norms with the run's
own ``train`` settings: ZClip's state (warm-up buffer, EMA mean and variance) and the global-norm
rule depend on nothing but that sequence, which starts afresh with every stage, so the replay
makes the same decisions as the run did.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from omegaconf import OmegaConf

from continual.train.clipping import build_clipper

__all__ = ["CLIPPED_RTOL", "clip_events", "clip_events_section", "replay_clipping"]

CLIPPED_RTOL = 1e-4  # a step is clipped when after < before * (1 - CLIPPED_RTOL)
_COLUMNS = ["run_dir", "method", "seed", "stage", "domain", "clipping", "steps", "clipped",
            "rate", "median_scale", "source"]  # fmt: skip


def replay_clipping(grad_norms: Sequence[float], train_cfg: Mapping[str, Any]) -> list[float]:
    """The global norms after clipping that one stage's clipper (built from ``train_cfg``:
    ``clipping``, ``max_grad_norm``, ``zclip``) gives for the pre-clip norms ``grad_norms``."""
    clip = build_clipper(OmegaConf.create(dict(train_cfg)))
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    after = []
    for norm in grad_norms:
        param.grad = torch.tensor([float(norm)], dtype=torch.float64)
        clip([param])
        after.append(float(param.grad.abs()))
    return after


def _train_settings(run_dir: Path) -> dict[str, Any]:
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    train = cfg.get("train") or {}
    return {
        "clipping": train.get("clipping", "norm"),
        "max_grad_norm": train.get("max_grad_norm", 0.0),
        "zclip": train.get("zclip") or {},
    }


def clip_events(logs: pd.DataFrame, run_dirs: Iterable[str | os.PathLike[str]]) -> pd.DataFrame:
    """One row per (run, stage): ``steps``, ``clipped`` steps, their ``rate`` and the
    ``median_scale`` (after / before) of the clipped steps (NaN when none), the run's
    ``clipping`` mode, and ``source`` (``logged`` or ``replayed``).

    ``logs``: :func:`continual.analysis.runs.load_train_logs` of ``run_dirs``; runs without a
    readable ``config.yaml`` are skipped.
    """
    rows = []
    for run_dir in map(Path, run_dirs):
        log = logs[logs["run_dir"] == str(run_dir)]
        if log.empty:
            continue
        try:
            settings = _train_settings(run_dir)
        except (OSError, yaml.YAMLError):
            continue
        for (stage, domain), part in log.groupby(["stage", "domain"], sort=True):
            part = part.sort_values("step")
            before = part["grad_norm"].to_numpy(float)
            logged = part.get("grad_norm_clipped")
            if logged is not None and logged.notna().all():
                after, source = logged.to_numpy(float), "logged"
            else:
                after, source = np.array(replay_clipping(before, settings)), "replayed"
            clipped = after < before * (1 - CLIPPED_RTOL)
            scales = after[clipped] / before[clipped]
            rows.append({
                "run_dir": str(run_dir), "method": part["method"].iloc[0],
                "seed": part["seed"].iloc[0], "stage": int(stage), "domain": domain,
                "clipping": settings["clipping"], "steps": len(part),
                "clipped": int(clipped.sum()), "rate": float(clipped.mean()),
                "median_scale": float(np.median(scales)) if len(scales) else float("nan"),
                "source": source,
            })  # fmt: skip
    return pd.DataFrame(rows, columns=_COLUMNS)


def clip_events_section(events: pd.DataFrame) -> str | None:
    """Markdown: per method, the share of steps clipped (over all its runs and stages) and the
    median scale of a clipped step; ``None`` without events."""
    if events.empty:
        return None
    from continual.analysis.markdown import md_table

    rows = []
    for method, g in events.groupby("method", sort=False, dropna=False):
        steps, clipped = int(g["steps"].sum()), int(g["clipped"].sum())
        scale = g["median_scale"].dropna()
        rows.append([
            method, ", ".join(sorted(set(g["clipping"]))), f"{clipped}/{steps}",
            f"{100 * clipped / steps:.1f}%", f"{scale.median():.3f}" if len(scale) else "-",
            ", ".join(sorted(set(g["source"]))),
        ])  # fmt: skip
    return "\n".join([
        "## Gradient clipping events",
        "",
        "Steps whose global gradient norm was cut (after < before by more than a relative "
        f"{CLIPPED_RTOL:g}), over all runs and stages; scale = after / before, median over the "
        "per-stage medians of clipped steps. `replayed`: runs from before `grad_norm_clipped` "
        "was logged, their clipper rerun on the logged pre-clip norms.",
        "",
        md_table(["method", "clipping", "clipped steps", "share", "median scale", "source"], rows),
    ])  # fmt: skip
