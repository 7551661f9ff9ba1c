"""Hand-built run directories with ``pairs`` domains (accuracy rows), for the analysis tests.

:func:`pairs_metrics` builds one chain's tidy table the way a run does: per-stage rows through
:func:`continual.rundir.tidy_rows`, then the recipe's own :func:`continual.recipe.summarise`
appends the summary rows (loss and accuracy metrics, the prompted gaps). :func:`write_run` and
:func:`write_pairs_sweep` put such tables into run directories that ``find_runs`` accepts.

The sweep :data:`SWEEP` (order med -> legal -> code; ``med`` is raw text, ``legal`` and ``code``
are pairs domains; methods ``lora`` and ``frozen_lora``, seeds 0 and 1) is the one whose numbers
the tests work out by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from continual.recipe import summarise
from continual.rundir import TIDY_COLUMNS, tidy_rows

ORDER = ("med", "legal", "code")
# Per (method, seed): accuracy (fractions, stages 0..3) of the pairs domains, holdout NLL (nats,
# response-only for pairs domains) of every domain, and the prompted base's accuracy.
SWEEP: dict[tuple[str, int], dict[str, dict[str, list[float] | float]]] = {
    ("lora", 0): {
        "accuracy": {"legal": [0.10, 0.10, 0.80, 0.60], "code": [0.20, 0.20, 0.30, 0.90]},
        "nll": {"med": [3.0, 2.5, 2.8, 2.9], "legal": [2.0, 2.0, 1.0, 1.3],
                "code": [2.5, 2.5, 2.4, 1.2]},
        "prompted_accuracy": {"legal": 0.30, "code": 0.50},
    },
    ("lora", 1): {
        "accuracy": {"legal": [0.10, 0.20, 0.90, 0.50], "code": [0.20, 0.20, 0.40, 0.80]},
        "nll": {"med": [3.0, 2.5, 2.8, 2.9], "legal": [2.0, 2.0, 1.0, 1.5],
                "code": [2.5, 2.5, 2.4, 1.2]},
        "prompted_accuracy": {"legal": 0.40, "code": 0.50},
    },
    ("frozen_lora", 0): {
        "accuracy": {"legal": [0.10, 0.10, 0.70, 0.70], "code": [0.20, 0.20, 0.20, 0.60]},
        "nll": {"med": [3.0, 2.6, 2.6, 2.6], "legal": [2.0, 2.0, 1.2, 1.2],
                "code": [2.5, 2.5, 2.5, 1.4]},
        "prompted_accuracy": {"legal": 0.30, "code": 0.50},
    },
    ("frozen_lora", 1): {
        "accuracy": {"legal": [0.10, 0.10, 0.60, 0.60], "code": [0.20, 0.20, 0.20, 0.70]},
        "nll": {"med": [3.0, 2.6, 2.6, 2.6], "legal": [2.0, 2.0, 1.2, 1.2],
                "code": [2.5, 2.5, 2.5, 1.4]},
        "prompted_accuracy": {"legal": 0.40, "code": 0.50},
    },
}  # fmt: skip


def pairs_metrics(
    method: str,
    seed: int,
    accuracy: dict[str, list[float]],
    nll: dict[str, list[float]],
    prompted_accuracy: dict[str, float] | None = None,
    order: tuple[str, ...] = ORDER,
    sequence: str = "pairs_med_legal_code",
    rouge: dict[str, list[float]] | None = None,
) -> pd.DataFrame:
    """One chain's tidy metrics table: ``accuracy[d][k]`` / ``nll[d][k]`` (/ ``rouge[d][k]``)
    after stage ``k`` (``nll`` must name every trained domain), stage-0 ``prompted_accuracy``
    (and a ``prompted_nll`` 0.1 nats under the base NLL) for the domains given; summary rows by
    :func:`continual.recipe.summarise`."""
    ids = {"run": f"{method}_seed{seed}", "sequence": sequence, "method": method,
           "model": "tiny_random", "seed": seed}  # fmt: skip
    rows = []
    for stage, label in enumerate(["base", *order]):
        values = {(d, "holdout_nll"): v[stage] for d, v in nll.items()}
        values |= {(d, "accuracy"): v[stage] for d, v in accuracy.items()}
        values |= {(d, "rougeL"): v[stage] for d, v in (rouge or {}).items()}
        if stage == 0:
            for d, v in (prompted_accuracy or {}).items():
                values |= {(d, "prompted_accuracy"): v, (d, "prompted_nll"): nll[d][0] - 0.1}
        rows += tidy_rows(ids, stage, label, values)
    cfg = OmegaConf.create(
        {"sequence": {"order": list(order)}, "eval": {"general_domain": None, "lm_eval_tasks": []}}
    )
    return summarise(cfg, ids, rows)[0][TIDY_COLUMNS]


def write_run(run_dir: Path, metrics: pd.DataFrame) -> Path:
    """A complete run directory holding ``metrics`` (metrics.csv and run_info.json)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics.to_csv(run_dir / "metrics.csv", index=False)
    ids = metrics.iloc[0][["run", "sequence", "method", "model", "seed"]].to_dict()
    ids["seed"] = int(ids["seed"])
    (run_dir / "run_info.json").write_text(json.dumps({"status": "complete", "ids": ids}))
    return run_dir


def write_pairs_sweep(root: Path, runs: dict = SWEEP) -> Path:
    """The runs of ``runs`` (default :data:`SWEEP`) as ``root/<method>_seed<seed>``."""
    for (method, seed), spec in runs.items():
        metrics = pairs_metrics(method, seed, spec["accuracy"], spec["nll"],
                                spec.get("prompted_accuracy"))  # fmt: skip
        write_run(root / f"{method}_seed{seed}", metrics)
    return root
