"""The recipe: set up, then per stage train -> save -> evaluate every domain, then summarise.

``run_experiment`` is what ``python -m continual.run`` calls. A run directory holds:
config.yaml (resolved, secrets redacted), run_info.json, metrics.csv (tidy), train_log.csv,
loss_matrix.csv, forgetting.csv, adapters/stage<k>_<domain>/ (safetensors + config) and
progress.json, the commit point after each finished stage (a rerun resumes after it); from
the command line also run.log, the log records of the run. The stages are the method's
(``Method.stages``: one per domain, or ``joint``'s one); the summary is
:mod:`continual.summary`'s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import resource
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from continual import metrics as clm
from continual.config.validate import validate_config, validate_for_model
from continual.data.cache import DataCache
from continual.data.domain import DomainData, build_domain
from continual.data.pairs import PairsDomain, build_pairs_domain
from continual.errors import ConfigError
from continual.eval.suite import evaluate_all, prepare_lm_eval_tasks, prompted_baseline
from continual.methods import build_method
from continual.methods.base import Method
from continual.models.loading import LoadedModel, load_model
from continual.rundir import (
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
    git_state,
    machine_info,
    package_versions,
    redact,
    tidy_rows,
)
from continual.runtime import apply_runtime
from continual.summary import log_report, summarise
from continual.tracking.base import RunLogger, build_logger
from continual.train import distributed as dist
from continual.train.loop import train_stage
from continual.train.seeding import seed_everything, stage_seed

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Settings of how a run executes, not of what it computes: a resume may change them.
RUNTIME_KEYS = ("data_cache", "threads", "cpu_malloc_retain")
# train keys added after runs were made, with the defaults that compute what those runs computed
# (a run directory made before them resumes)
ADDED_TRAIN_DEFAULTS = {"mixed_precision": "no", "gradient_checkpointing": False,
                        "loss_chunk_tokens": 0}  # fmt: skip

log = logging.getLogger(__name__)


Domain = DomainData | PairsDomain


def prepare_data(cfg: DictConfig, loaded: LoadedModel, names: list[str]) -> dict[str, Domain]:
    """Build every domain's train/evaluation data (fails on bad data before any training):
    packed blocks for ``kind: text`` domains, tokenized examples for ``kind: pairs``; the
    evaluation set is the holdout, or with ``eval.split=validation`` the validation set. With
    ``data_cache`` on (the default) a domain prepared before comes from
    ``<cache_dir>/data/`` (:mod:`continual.data.cache`)."""
    split = str(cfg.eval.get("split", "holdout"))
    tokenizer = loaded.tokenizer
    cache = DataCache(Path(cfg.cache_dir), tokenizer) if cfg.get("data_cache", True) else None
    data: dict[str, Domain] = {}
    for name in names:
        started, domain_cfg = time.perf_counter(), cfg.domains[name]
        settings: dict[str, Any] = {"kind": domain_cfg.get("kind", "text"), "split": split}
        if settings["kind"] == "pairs":
            build = partial(build_pairs_domain, name, domain_cfg, tokenizer, split)
        else:
            settings.update(
                block_len=cfg.train.block_len, holdout_blocks=cfg.eval.holdout_blocks,
                max_train_blocks=cfg.train.get("max_train_blocks"),
            )  # fmt: skip
            build = partial(
                build_domain, name, domain_cfg, tokenizer, block_len=settings["block_len"],
                holdout_blocks=settings["holdout_blocks"],
                max_train_blocks=settings["max_train_blocks"], split=split,
            )  # fmt: skip
        data[name] = build() if cache is None else cache.domain(name, domain_cfg, settings, build)
        if settings["kind"] == "pairs":
            continue
        s = data[name].stats
        log.info(
            "data %s: %d train / %d %s documents, %d train / %d %s blocks (%.1f s)",
            name, s["train_docs"], s["holdout_docs"], split, len(data[name].train_blocks),
            len(data[name].holdout_blocks), split, time.perf_counter() - started,
        )  # fmt: skip
    return data


def read_progress(run_dir: Path) -> dict[str, Any]:
    """The commit record of a run directory: last completed stage and the domains trained."""
    path = run_dir / "progress.json"
    if not path.is_file():
        return {"completed_stage": 0, "trained": []}
    return json.loads(path.read_text())


def check_stages(run_dir: Path, progress: dict[str, Any], stages: list[str]) -> None:
    """Refuse a run directory whose finished stages are not this method's (made by another
    version of it, e.g. a three-stage ``joint`` run before joint became one stage)."""
    trained = list(progress["trained"])
    if trained != stages[: len(trained)]:
        raise ConfigError(
            f"{run_dir} finished the stages {trained}, but this method trains {stages}: it was "
            "made by another version of the method. Start it again in a new hydra.run.dir."
        )


def ensure_writable(run_dir: Path) -> None:
    """Fail early, with the fix, when the run directory cannot be written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"Cannot write to the run directory {run_dir} ({exc.strerror or exc}). "
            "Choose another one with hydra.run.dir=<dir>, or free disk space."
        ) from exc


def _check_same_config(run_dir: Path, resolved: dict[str, Any]) -> None:
    """Refuse to resume a run directory made with another config (``RUNTIME_KEYS`` aside),
    naming the settings that differ."""
    saved = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    assert isinstance(saved, dict)
    if isinstance(saved.get("train"), dict):
        saved["train"] = {**ADDED_TRAIN_DEFAULTS, **saved["train"]}
    differ = _differences(_experiment(saved), _experiment(resolved))
    if differ:
        shown = "; ".join(differ[:5]) + ("; ..." if len(differ) > 5 else "")
        raise ConfigError(
            f"{run_dir} holds a partial run with a different config ({shown}); resuming it "
            "would mix two experiments. Rerun with its original overrides (the run's value "
            "first above), or pick a new hydra.run.dir."
        )


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf setting that differs between two config trees."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(dict.fromkeys([*old, *new]))
        missing = "<absent>"
        return [
            line
            for k in keys
            for line in _differences(old.get(k, missing), new.get(k, missing), f"{prefix}{k}.")
        ]
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def _experiment(resolved: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resolved.items() if k not in RUNTIME_KEYS}


def run_experiment(cfg: DictConfig, run_dir: Path) -> pd.DataFrame:
    """Run (or resume) one chain of stages; returns the tidy metrics table."""
    started = time.perf_counter()
    sha, dirty = git_state(PROJECT_ROOT)  # before the minutes of model and data loading
    names = validate_config(cfg)
    apply_runtime(cfg)
    method = build_method(cfg.method)
    order = list(cfg.sequence.order)
    stages = method.stages(order)  # one per domain, unless the method trains otherwise
    run_dir = Path(run_dir)
    main = dist.is_main()  # only the main process writes files (see continual.train.distributed)
    if main:
        ensure_writable(run_dir)
    resolved = redact(OmegaConf.to_container(cfg, resolve=True))
    progress = read_progress(run_dir)
    done = progress["completed_stage"]
    if done:
        _check_same_config(run_dir, resolved)
        check_stages(run_dir, progress, stages)
    if done == len(stages) and (run_dir / "forgetting.csv").is_file():  # the summary's last file
        log.info("%s already holds a complete run; nothing to do.", run_dir)
        return pd.read_csv(run_dir / "metrics.csv")
    ids = {
        "run": run_dir.name, "sequence": cfg.sequence.name, "method": cfg.method.name,
        "model": cfg.model.name, "seed": int(cfg.seed),
    }  # fmt: skip
    logger = build_logger(cfg, run_dir, ids)  # checks the tracker config before model work
    logger = logger if main else RunLogger(cfg, run_dir, ids)

    if not main:  # the main process fills the model and data caches first, the others read them
        dist.barrier()
    loaded = load_model(cfg.model, Path(cfg.cache_dir))
    validate_for_model(cfg, loaded.model, loaded.max_positions)
    data = prepare_data(cfg, loaded, names)
    if main:
        dist.barrier()
    seed_everything(stage_seed(int(cfg.seed), 0))  # adapter initialisation in setup
    model = method.setup(loaded.model)
    if cfg.train.get("gradient_checkpointing", False):
        loaded.model.config.use_cache = False
        loaded.model.gradient_checkpointing_enable({"use_reentrant": False})
    method.bind(data, loaded.device, cfg.train, int(cfg.seed))
    if main:
        tasks_dir = prepare_lm_eval_tasks(cfg, data, loaded.tokenizer, run_dir, fresh=not done)
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
    dist.barrier()  # the other processes read the lm-eval tasks that the main one wrote
    if not main:  # the main process's lm-eval tasks, if any
        wanted = cfg.eval.lm_eval_holdout or cfg.eval.lm_eval_tasks
        tasks_dir = run_dir / "lm_eval_tasks" if wanted else None
    info = {
        "status": "running", "ids": ids, "git_sha": sha, "git_dirty": dirty,
        "packages": package_versions(), "machine": machine_info(), "model": loaded.identity,
        "data": {n: d.stats for n, d in data.items()},
    }  # fmt: skip
    if main:
        atomic_write_json(run_dir / "run_info.json", info)
    logger.start(resolved)
    try:
        if done:
            log.info(
                "Resuming %s after stage %d (%s)", run_dir, done, ", ".join(progress["trained"])
            )
            rows = pd.read_csv(run_dir / "metrics.csv").query("stage <= @done").to_dict("records")
            past = pd.read_csv(run_dir / "train_log.csv").query("stage <= @done")
            log_rows = past.to_dict("records")
            method.load(run_dir / "adapters" / f"stage{done}_{stages[done - 1]}", stages[:done])
        else:
            values = evaluate_all(
                method, model, data, cfg, loaded.device, 0, loaded.tokenizer, tasks_dir
            )
            if cfg.eval.prompted_k:
                values.update(
                    prompted_baseline(
                        method, model, loaded.tokenizer, data, order, cfg, loaded.device
                    )  # fmt: skip
                )
            rows, log_rows = tidy_rows(ids, 0, "base", values), []
            logger.log_eval(0, "base", values)
            if main:
                atomic_write_csv(run_dir / "metrics.csv", pd.DataFrame(rows))
        for stage, domain in enumerate(stages, start=1):
            if stage > done:
                stage_rows, stage_log = run_stage(
                    cfg, run_dir, ids, stage, domain, method, model, data, loaded, logger,
                    tasks_dir, offset=len(log_rows),
                )  # fmt: skip
                rows += stage_rows
                log_rows += stage_log
                if main:
                    atomic_write_csv(run_dir / "train_log.csv", pd.DataFrame(log_rows))
                    atomic_write_csv(run_dir / "metrics.csv", pd.DataFrame(rows))
                    progress = {"completed_stage": stage, "trained": stages[:stage]}
                    atomic_write_json(run_dir / "progress.json", progress)
        metrics, matrix, forgetting, summary = summarise(cfg, ids, rows, stages)
        if main:
            atomic_write_csv(run_dir / "metrics.csv", metrics)
            atomic_write_csv(run_dir / "loss_matrix.csv", matrix.reset_index())
            atomic_write_csv(run_dir / "forgetting.csv", forgetting)
        logger.log_summary(matrix, forgetting, summary)
    except BaseException as exc:
        # Ctrl-C, or SystemExit: a cluster scheduler's preemption or time limit (submitit
        # requeues the job, which resumes here)
        status = "interrupted" if isinstance(exc, KeyboardInterrupt | SystemExit) else "failed"
        info.update(status=status, error=f"{type(exc).__name__}: {exc}",
                    completed_stage=read_progress(run_dir)["completed_stage"])  # fmt: skip
        with contextlib.suppress(OSError):
            if main:
                atomic_write_json(run_dir / "run_info.json", info)
        logger.finish(status)
        raise
    info.update(
        status="complete",
        trainable_parameters={  # per stage: what that stage's optimizer updated
            f"stage{r['stage']}_{r['stage_domain']}": int(r["value"])
            for r in rows
            if r["metric"] == "trainable_parameters"
        },
        wall_seconds=round(time.perf_counter() - started, 1),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    )
    if main:
        atomic_write_json(run_dir / "run_info.json", info)
    dist.barrier()  # no process ends before the main one has written the run
    logger.finish("complete")
    log_report(metrics, matrix, forgetting, stages, order, str(cfg.eval.get("split", "holdout")))
    return metrics


def train_method_stage(
    cfg: DictConfig, stage: int, domain: str, method: Method, model: Any, device: torch.device,
    desc: str, steps: int | None = None, wrap: Callable[[Any], Any] = lambda s: s,
) -> tuple[list[Any], list[dict[str, Any]], Any]:  # fmt: skip
    """The training half of a stage: seed, ``before_stage``, then train ``method``'s parameter
    groups on its training set (passed through ``wrap``, e.g. a timing wrapper) for ``steps``
    (default: the method's ``stage_steps``, else the loop's count). Returns (step records,
    parameter groups, the method's training set)."""
    seed = stage_seed(int(cfg.seed), stage)
    seed_everything(seed)
    method.before_stage(stage, domain)
    groups = method.param_groups(float(cfg.train.lr))
    train_set = method.training_set(stage, domain)
    records = train_stage(
        model, groups, wrap(train_set), cfg.train, device, torch.Generator().manual_seed(seed),
        desc=desc, extra_losses=method.extra_losses, beside=method.beside(),
        extra_uses_logits=method.extra_losses_use_logits,
        steps=method.stage_steps(stage, domain) if steps is None else steps,
    )  # fmt: skip
    return records, groups, train_set


def run_stage(
    cfg: DictConfig, run_dir: Path, ids: dict[str, Any], stage: int, domain: str,
    method: Method, model: Any, data: dict[str, Domain], loaded: LoadedModel,
    logger: RunLogger, tasks_dir: Path | None = None, offset: int = 0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """Train one stage, save its adapters, evaluate every domain; returns (metric rows, steps).
    ``offset``: optimizer steps taken by the earlier stages (for the global step count)."""
    t0, device = time.perf_counter(), loaded.device
    label = f"stage {stage}/{len(method.stages(list(cfg.sequence.order)))} {domain}"
    records, groups, _ = train_method_stage(cfg, stage, domain, method, model, device, label)
    trainable = sum(p.numel() for group in groups for p in group["params"])
    dist.sync_from_main([model, *method.beside()])  # no float drift between processes
    method.after_stage(stage, domain)
    dist.sync_tensors(method.shared_tensors())  # e.g. EWC's Fisher: rank 0's on every process
    if dist.is_main():
        adapter_dir = run_dir / "adapters" / f"stage{stage}_{domain}"
        shutil.rmtree(adapter_dir, ignore_errors=True)
        method.save(adapter_dir)
    values = evaluate_all(method, model, data, cfg, device, stage, loaded.tokenizer, tasks_dir)
    for key, value in clm.gradient_stability([r.grad_norm for r in records]).items():
        values[(domain, f"grad_norm_{key}")] = value
    lora_norms = [r.grad_norm_lora for r in records]
    if any(math.isfinite(v) for v in lora_norms):  # the LoRA group alone (CRMA excluded)
        lora_stats = clm.gradient_stability(lora_norms)
        values[(domain, "grad_norm_lora_peak")] = lora_stats["peak"]
        values[(domain, "grad_norm_lora_mean")] = lora_stats["mean"]
    values[(domain, "train_loss_final")] = records[-1].loss
    values[(domain, "trainable_parameters")] = trainable
    values[(domain, "stage_seconds")] = time.perf_counter() - t0
    steps = [
        {"stage": stage, "domain": domain, "global_step": offset + r.step, **r.row()}
        for r in records
    ]
    logger.log_steps(stage, domain, steps)
    logger.log_eval(stage, domain, values)
    log.info("%s: done in %.0f s", label, time.perf_counter() - t0)
    return tidy_rows(ids, stage, domain, values), steps
