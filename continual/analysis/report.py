"""Report over one run or a sweep: ``python -m continual.report <run-or-sweep-dir> [--out DIR]``.

Writes into ``--out`` (default ``<dir>/report``):

* ``summary.csv``: per method x final-stage scalar metric (``avg_forgetting_pct``, ``bwt``,
  ``forgetting_pct/<domain>``, ``crma_*`` ...): n, mean, sd, ci_low, ci_high over seeds
  (:func:`continual.metrics.stats.summarize_runs`);
* ``report.md``: runs found, mean loss matrices, forgetting/drift, summary metrics (with a
  multi-task reference run, ``method=joint``, every method beside it:
  :mod:`continual.analysis.reference_sections`), and where
  the runs measured them fine-tuning vs the prompted base, general-capability retention and
  lm-eval bits per byte per stage (:mod:`continual.analysis.eval_tables`); for runs with
  ``pairs`` domains the task-accuracy matrix, accuracy forgetting (points and %), the accuracy
  summary metrics (BWT, FWT, final average accuracy) and fine-tuning vs prompting in accuracy
  (:mod:`continual.analysis.accuracy_sections`); gradient stability, for CRMA methods the bypass
  effect and gradient-norm ratios to LoRA with CIs (:mod:`continual.analysis.crma_sections`),
  paired differences between methods, and the vendor-reported numbers for side-by-side reading;
* ``forgetting_curves.png``, ``heatmaps.png``, (when train logs exist) ``grad_norms.png`` and
  (with pairs domains) ``accuracy_curves.png``.

This module loads the runs and assembles the files; each markdown section is rendered by
:mod:`continual.analysis.report_sections`, :mod:`continual.analysis.accuracy_sections`,
:mod:`continual.analysis.reference_sections` or :mod:`continual.analysis.published`, the
figures by :mod:`continual.analysis.plots`. A run evaluated on ``eval.split=validation`` gets a
warning at the top.

A path without complete runs prints one ``error:`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from continual.analysis import report_sections as sections
from continual.analysis.accuracy_sections import accuracy_sections
from continual.analysis.accuracy_tables import has_accuracy, is_accuracy_metric
from continual.analysis.clip_events import clip_events, clip_events_section
from continual.analysis.crma_sections import bypass_section, gradient_ratio_section
from continual.analysis.plots import (
    plot_accuracy_curves,
    plot_forgetting_curves,
    plot_grad_norms,
    plot_heatmaps,
)
from continual.analysis.published import published_section
from continual.analysis.reference_sections import reference_section
from continual.analysis.runs import (
    NoRunsError,
    drop_duplicate_runs,
    find_incomplete_runs,
    find_runs,
    label_methods,
    load_metrics,
    load_train_logs,
    reference_methods,
    run_settings,
)
from continual.analysis.tables import summary_table
from continual.errors import ContinualError

__all__ = ["build_report", "main", "summary_table"]


def build_report(path: str | Path, out: str | Path | None = None) -> Path:
    """Analyse every complete run under ``path``; write the report files into ``out``.

    Returns the output directory. Raises :class:`continual.analysis.runs.NoRunsError` when there
    is no complete run.
    """
    root = Path(path)
    runs = find_runs(root)
    incomplete = find_incomplete_runs(root)
    if not runs:
        extra = f" ({len(incomplete)} incomplete run(s) found)" if incomplete else ""
        raise NoRunsError(
            f"no complete run under {root}{extra}: expected run directories with "
            "metrics.csv and a run_info.json whose status is 'complete'"
        )
    out_dir = Path(out) if out is not None else root / "report"
    out_dir.mkdir(parents=True, exist_ok=True)

    metrics, dropped = drop_duplicate_runs(label_methods(load_metrics(runs)))
    kept = [Path(p) for p in metrics["run_dir"].unique()]
    logs = label_methods(load_train_logs(kept))

    summary = summary_table(metrics)
    summary.to_csv(out_dir / "summary.csv", index=False)

    figures = {
        "forgetting_curves.png": plot_forgetting_curves(metrics),
        "heatmaps.png": plot_heatmaps(metrics),
    }
    references = reference_methods(metrics)
    if not logs.empty:
        figures["grad_norms.png"] = plot_grad_norms(logs, references)
    if has_accuracy(metrics):
        figures["accuracy_curves.png"] = plot_accuracy_curves(metrics)
    for name, fig in figures.items():
        fig.savefig(out_dir / name, dpi=130)
        plt.close(fig)

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    depth = [
        sections.prompted_section(metrics),
        sections.retention_section(metrics),
        sections.lm_eval_section(metrics),
    ]
    crma_depth = [bypass_section(metrics), gradient_ratio_section(metrics)]
    clipping = clip_events_section(clip_events(logs, kept)) if not logs.empty else None
    loss_summary = summary[~summary["metric"].map(is_accuracy_metric).astype(bool)]
    parts = [
        f"# Continual-learning report\n\nSource: `{root}` (generated {stamp} by "
        "`python -m continual.report`). Losses are holdout mean token NLL in nats."
        + _split_warning(kept),
        sections.runs_section(metrics, incomplete, dropped, root),
        sections.matrix_section(metrics),
        sections.forgetting_section(metrics),
        sections.summary_section(loss_summary, references),
        *(section for section in [reference_section(metrics)] if section),
        *accuracy_sections(metrics),
        *(section for section in depth if section),
        sections.gradient_section(metrics),
        *(section for section in [clipping, *crma_depth] if section),
        sections.paired_section(metrics),
        published_section(),
        "## Figures\n\n" + "\n\n".join(f"![{n[:-4]}]({n})" for n in figures),
    ]
    (out_dir / "report.md").write_text("\n\n".join(parts) + "\n")
    return out_dir


def _split_warning(run_dirs: Sequence[Path]) -> str:
    """A warning when runs evaluated on the validation split (``eval.split``), not the holdout."""
    splits = run_settings(run_dirs, ["eval.split"])["eval.split"]
    if "validation" not in splits:
        return ""
    which = "Every run" if splits == ["validation"] else "Some runs (see Settings below)"
    return (
        f"\n\n**{which} evaluated on the validation split (`eval.split=validation`), not "
        'the holdout**: the "holdout" losses below are validation losses, for choosing '
        "settings; report final numbers from runs on the holdout."
    )


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
