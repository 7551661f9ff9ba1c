"""What the recipe evaluates after every stage: holdout loss (text domains), response-only
loss, accuracy and ROUGE-L (pairs domains, :mod:`continual.eval.pairs`), lm-eval tasks, method
diagnostics; and, once before any training, the prompted baseline.

Values are ``{(eval_domain, metric): value}``, the keys of the tidy metrics table.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig

from continual.errors import ContinualError
from continual.eval.crma_probe import bypass_effects, probe_batch, residual_ratios
from continual.eval.holdout import holdout_nll

if TYPE_CHECKING:
    from continual.data.domain import DomainData
    from continual.methods.base import Method


def evaluate_all(
    method: Method, model: Any, data: dict[str, DomainData], cfg: DictConfig, device: torch.device,
    stage: int, tokenizer: Any = None, tasks_dir: Path | None = None,
) -> dict[tuple[str, str], float]:  # fmt: skip
    """Holdout NLL of every domain, each under the model the method serves for it (and the
    accuracy of pairs domains); for methods with a CRMA backbone the bypass effect and residual
    size (:mod:`continual.eval.crma_probe`, unless ``eval.crma_bypass`` is false); plus the
    configured lm-eval tasks (holdout tasks per domain, extra tasks under the general domain's
    model) and the method's diagnostics."""
    values: dict[tuple[str, str], float] = {}
    crma = getattr(method, "crma", None) if cfg.eval.get("crma_bypass", True) else None
    for name, domain in data.items():
        desc = f"eval s{stage} {name}"
        with method.serving(name):
            scores = _score(model, domain, cfg, device, desc)
            if domain.kind != "pairs" and cfg.eval.lm_eval_holdout:
                values.update(
                    _lm_eval(model, tokenizer, [f"continual_{name}"], name, cfg, tasks_dir)
                )
            if crma is not None:
                with crma.disabled():
                    bypassed = _score(model, domain, cfg, device, f"{desc} bypass")
                scores.update(bypass_effects(scores, bypassed))
                batch = probe_batch(domain, int(cfg.eval.batch_size))
                scores.update(residual_ratios(model, crma, batch, device))
        values.update({(name, metric): value for metric, value in scores.items()})
    extra = list(cfg.eval.lm_eval_tasks or [])
    if extra:
        general = cfg.eval.get("general_domain") or "general"
        with method.serving(general):
            values.update(_lm_eval(model, tokenizer, extra, None, cfg, tasks_dir))
    for key, value in method.diagnostics().items():
        values[("all", key)] = value
    return values


def _score(
    model: Any, domain: Any, cfg: DictConfig, device: torch.device, desc: str
) -> dict[str, float]:
    """One domain's holdout scores under the model as served now: ``holdout_nll`` (text), or
    response-only ``holdout_nll``, ``accuracy`` and maybe ``rougeL`` (pairs)."""
    from continual.eval.pairs import evaluate_pairs

    if domain.kind == "pairs":
        return evaluate_pairs(model, domain, cfg.eval.batch_size, device, desc=desc)
    nll, _ = holdout_nll(model, domain.holdout_blocks, cfg.eval.batch_size, device, desc)
    return {"holdout_nll": nll}


def prepare_lm_eval_tasks(
    cfg: DictConfig, data: dict[str, DomainData], tokenizer: Any, run_dir: Path, fresh: bool
) -> Path | None:
    """Write the holdout lm-eval tasks into ``run_dir/lm_eval_tasks`` and build every
    configured task once, so that an unknown task or missing dataset fails before any model
    work (a fresh run then leaves nothing behind). ``None`` when no lm-eval task is asked for."""
    if not (cfg.eval.lm_eval_holdout or cfg.eval.lm_eval_tasks):
        return None
    from continual.eval.holdout_tasks import write_holdout_tasks
    from continual.eval.lm_eval_bridge import check_tasks

    tasks_dir = run_dir / "lm_eval_tasks"
    unit = cfg.eval.get("lm_eval_unit", "documents")
    names = write_holdout_tasks(data, tasks_dir, unit=unit, tokenizer=tokenizer)
    try:
        own = names if cfg.eval.lm_eval_holdout else []
        check_tasks([*own, *(cfg.eval.lm_eval_tasks or [])], tasks_dir)
    except ContinualError:
        if fresh:
            shutil.rmtree(tasks_dir, ignore_errors=True)
        raise
    return tasks_dir


def _lm_eval(
    model: Any, tokenizer: Any, tasks: list[str], domain: str | None, cfg: DictConfig,
    tasks_dir: Path | None,
) -> dict[tuple[str, str], float]:  # fmt: skip
    """lm-eval results as (eval_domain, "lm_eval/<metric>") entries (task name as the domain
    for extra tasks)."""
    from continual.eval.lm_eval_bridge import evaluate_tasks

    results = evaluate_tasks(
        model, tokenizer, tasks, tasks_dir, cfg.eval.batch_size, limit=cfg.eval.lm_eval_limit
    )
    return {
        (domain or task, f"lm_eval/{metric}"): value
        for task, metrics in results.items()
        for metric, value in metrics.items()
    }


def prompted_baseline(
    method: Method, model: Any, tokenizer: Any, data: dict[str, DomainData], order: list[str],
    cfg: DictConfig, device: torch.device,
) -> dict[tuple[str, str], float]:  # fmt: skip
    """Stage-0 prompted baseline: the base model (as served before any training) scored on each
    trained domain's holdout with ``eval.prompted_k`` training passages in its context; for a
    pairs domain, ``eval.prompted_k`` solved training examples in front of every prompt
    (``prompted_nll`` and ``prompted_accuracy``)."""
    from continual.eval.pairs import evaluate_pairs
    from continual.eval.prompted import prompted_holdout_nll

    values = {}
    for name in order:
        if data[name].kind == "pairs":
            with method.serving(name):
                scores = evaluate_pairs(
                    model, data[name], int(cfg.eval.batch_size), device,
                    k=int(cfg.eval.prompted_k), desc=f"prompted {name}",
                )  # fmt: skip
            values[(name, "prompted_nll")] = scores["holdout_nll"]
            values[(name, "prompted_accuracy")] = scores["accuracy"]
            continue
        with method.serving(name):
            values[(name, "prompted_nll")] = prompted_holdout_nll(
                model, tokenizer, data[name].holdout_blocks, data[name].train_docs,
                k=int(cfg.eval.prompted_k), context_tokens=int(cfg.eval.prompted_context_tokens),
                batch_size=int(cfg.eval.batch_size), device=device,
            )  # fmt: skip
    return values
