"""Run-directory files: atomic writes, the run-info record, and the tidy metrics table."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

TIDY_COLUMNS = [
    "run", "sequence", "method", "model", "seed",
    "stage", "stage_domain", "eval_domain", "metric", "value",
]  # fmt: skip
PACKAGES = ["torch", "transformers", "peft", "bitsandbytes", "hydra-core", "omegaconf",
            "wandb", "lm_eval", "pandas", "numpy", "datasets"]  # fmt: skip
# summary metric per trained domain: L[s(d)][d] - prompted base NLL (< 0: fine-tuning won)
PROMPTED_GAP = "finetune_minus_prompted_nll"
# Pairs domains: accuracy after the domain's own stage minus the prompted base's, in points.
PROMPTED_ACC_GAP = "finetune_minus_prompted_acc_pts"
SECRET_KEY = re.compile(r"(^|_)(api_?key|key|token|secret|password)$", re.IGNORECASE)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and rename, so readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_bench_json(out: Path | None, result: dict[str, Any]) -> dict[str, Any]:
    """A benchmark's result written to ``out`` (nothing when None), saying where; ``result``."""
    if out is not None:
        atomic_write_json(out, result)
        print(f"wrote {out}")
    return result


def atomic_write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False))


def redact(obj: Any) -> Any:
    """Copy of a nested config with values under secret-looking keys replaced, including
    command-line overrides written as ``key=value`` strings (Hydra's own copies keep those)."""
    if isinstance(obj, dict):
        return {
            k: "<redacted>" if SECRET_KEY.search(str(k)) and v else redact(v)
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        key, sep, value = obj.partition("=")
        if sep and value and SECRET_KEY.search(key.lstrip("+~").rsplit(".", 1)[-1]):
            return f"{key}=<redacted>"
    return obj


def redact_hydra_copies(run_dir: Path) -> None:
    """Redact secrets in Hydra's own copies of the config and overrides (``.hydra/*.yaml``)."""
    import yaml

    for path in sorted((run_dir / ".hydra").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        clean = redact(data)
        if clean != data:
            atomic_write_text(path, yaml.safe_dump(clean, sort_keys=False))


def git_state(cwd: Path) -> tuple[str | None, bool | None]:
    """``(commit SHA, whether tracked or untracked files differ from it)``; ``(None, None)``
    outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None, None
    return head.stdout.strip(), bool(status.stdout.strip())


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def bench_provenance(git_sha: str, git_dirty: bool, device: Any) -> dict[str, Any]:
    """Where a benchmark's numbers came from: the commit and dirty flag (taken at its start),
    the load average, package versions and the machine with the device it ran on."""
    return {
        "load_average": os.getloadavg(),
        "git_sha": git_sha,
        "git_dirty": git_dirty,
        "packages": package_versions(),
        "machine": {**machine_info(), "device": str(device)},
    }


def tidy_rows(
    ids: dict[str, Any], stage: int, stage_domain: str, values: dict[tuple[str, str], float]
) -> list[dict[str, Any]]:
    """Rows of the tidy table for one stage: ``values`` maps (eval_domain, metric) -> value."""
    return [
        {
            **ids,
            "stage": stage,
            "stage_domain": stage_domain,
            "eval_domain": d,
            "metric": m,
            "value": float(v),
        }  # fmt: skip
        for (d, m), v in values.items()
    ]


def loss_matrix(metrics: pd.DataFrame, metric: str = "holdout_nll") -> pd.DataFrame:
    """Stage x domain matrix (index: stage, columns: eval_domain) from a tidy table."""
    rows = metrics[metrics["metric"] == metric]
    matrix = rows.pivot_table(index="stage", columns="eval_domain", values="value", aggfunc="first")
    matrix.columns.name = None
    return matrix
