"""Evaluate our models with EleutherAI's lm-evaluation-harness (``lm-eval``), in memory.

:func:`evaluate_tasks` runs any lm-eval tasks (ours from
:func:`continual.eval.holdout_tasks.write_holdout_tasks`, or the bundled ones) on a model that is
already loaded, e.g. after a stage; :func:`check_tasks` builds them without a model, so that a
bad task fails before any model work. The task files and the units that relate lm-eval's
``bits_per_byte`` to our holdout loss live in :mod:`continual.eval.holdout_tasks` (re-exported
here).

lm-eval is imported lazily (it is slow to import).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from continual.errors import ConfigError, DataError
from continual.eval.holdout_tasks import (
    METRICS,
    UNITS,
    bits_per_byte,
    nll_to_bits_per_byte,
    write_holdout_tasks,
)

log = logging.getLogger(__name__)

_LIST_TASKS = "`lm-eval ls tasks` (add `--include_path DIR` for task files of your own)"
# lm-eval's warnings when it is handed a loaded model: that is how we use it, in one process
_EXPECTED_WARNINGS = (
    "`pretrained` model kwarg is not of type `str`",
    "Passed an already-initialized model through `pretrained`",
)


class _DropExpectedWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_EXPECTED_WARNINGS)


# --------------------------------------------------------------------------- evaluation


@contextlib.contextmanager
def _hf_offline(offline: bool | None) -> Iterator[None]:
    """Set the Hugging Face offline switches for the block, and restore them afterwards.

    ``None`` keeps ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` when the user set them and is
    offline otherwise (no hub is assumed at run time). Modules that are already imported read
    the switches into constants, so those are patched too.
    """
    if offline is None:
        if "HF_HUB_OFFLINE" in os.environ or "HF_DATASETS_OFFLINE" in os.environ:
            yield
            return
        offline = True
    value = "1" if offline else "0"
    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE=value, HF_DATASETS_OFFLINE=value)
    import datasets.config
    import huggingface_hub.constants

    patched = [
        (huggingface_hub.constants, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_DATASETS_OFFLINE"),
    ]
    saved = [(mod, attr, getattr(mod, attr)) for mod, attr in patched if hasattr(mod, attr)]
    try:
        for mod, attr, _ in saved:
            setattr(mod, attr, offline)
        yield
    finally:
        for mod, attr, old in saved:
            setattr(mod, attr, old)
        for key, old in saved_env.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextlib.contextmanager
def _keep_global_rngs() -> Iterator[None]:
    """Restore the Python, NumPy and torch (CPU and CUDA) global RNG states afterwards."""
    py, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


@functools.lru_cache(maxsize=1)
def _bundled_manager() -> Any:
    """lm-eval's bundled tasks (indexing their ~15k YAML files takes 8-16 s: built once)."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def _route_tasks(include_path: Path | None, tasks: Sequence[str]) -> dict[str, Any]:
    """The TaskManager that builds each task: tasks found in ``include_path`` come from an
    index of that directory alone (fast); the others from lm-eval's bundled index.

    Raises:
        ConfigError: ``include_path`` is not a directory, or a task is known to neither.
    """
    from lm_eval.tasks import TaskManager

    own_names: list[str] = []
    route: dict[str, Any] = {}
    if include_path is not None:
        include = Path(include_path).expanduser().resolve()
        if not include.is_dir():
            raise ConfigError(f"include_path {include} is not a directory of lm-eval task YAMLs.")
        own = TaskManager(include_path=str(include), include_defaults=False)
        own_names = list(own.all_tasks)
        route = {t: own for t in tasks if t in own.task_index}
    rest = [t for t in tasks if t not in route]
    if rest:
        bundled = _bundled_manager()
        unknown = [t for t in rest if t not in bundled.task_index]
        if unknown:
            _unknown_tasks(unknown, own_names + list(bundled.all_tasks), include_path)
        route.update({t: bundled for t in rest})
    return route


def _unknown_tasks(unknown: Sequence[str], known: Sequence[str], include_path: Path | None) -> None:
    hints = []
    for t in unknown:
        close = difflib.get_close_matches(t, known, n=3)
        hints.append(f"{t!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    where = f" or in include_path={include_path}" if include_path else " (no include_path given)"
    raise ConfigError(
        f"unknown lm-eval task(s): {'; '.join(hints)}. They are not bundled with lm-eval"
        f"{where}. List the available tasks with {_LIST_TASKS}; write our holdout tasks with "
        "continual.eval.holdout_tasks.write_holdout_tasks."
    )


def _load_tasks(route: Mapping[str, Any], offline: bool) -> dict[str, Any]:
    """Build every task (which loads its dataset) before the model runs; fail with the fix."""
    merged: dict[str, Any] = {"tasks": {}, "groups": {}, "group_map": {}}
    for name, manager in route.items():
        try:
            loaded = manager.load([name])
        except Exception as exc:
            if not _is_data_error(exc):
                raise ConfigError(
                    f"lm-eval task {name!r} could not be built: {type(exc).__name__}: "
                    f"{str(exc)[:300]}. Check its YAML."
                ) from exc
            entry = manager.task_index.get(name)
            cfg = (getattr(entry, "cfg", None) or {}) if entry is not None else {}
            source = str(cfg.get("dataset_path", "?"))
            if cfg.get("dataset_name"):
                source += f" (config {cfg['dataset_name']})"
            files = (cfg.get("dataset_kwargs") or {}).get("data_files")
            fix = (
                f"the local data file(s) {files} must exist: re-create them with "
                "write_holdout_tasks"
                if files
                else "a Hugging Face dataset needs internet once (then it is cached in "
                f"HF_DATASETS_CACHE, {_datasets_cache()}): run once with internet "
                "(evaluate_tasks(..., offline=False) or HF_HUB_OFFLINE=0), or copy the cache "
                "from a machine that has it"
            )
            mode = "offline" if offline else "online"
            raise DataError(
                f"lm-eval task {name!r} cannot load its dataset {source} ({mode}): "
                f"{type(exc).__name__}: {str(exc)[:300]}. To fix: {fix}."
            ) from exc
        for key in merged:
            merged[key].update(loaded.get(key) or {})
    return merged


def _is_data_error(exc: BaseException) -> bool:
    """Missing/unreachable/corrupt data (OSError covers FileNotFoundError, ConnectionError and
    datasets' DatasetNotFoundError), as opposed to a broken task YAML."""
    from datasets.exceptions import DatasetsError

    return isinstance(exc, (OSError, DatasetsError))


def _datasets_cache() -> str:
    try:
        import datasets.config

        return str(datasets.config.HF_DATASETS_CACHE)
    except Exception:  # pragma: no cover - datasets is a dependency
        return "~/.cache/huggingface/datasets"


def _is_offline(offline: bool | None) -> bool:
    if offline is not None:
        return offline
    value = os.environ.get("HF_HUB_OFFLINE", os.environ.get("HF_DATASETS_OFFLINE", "1"))
    return value.upper() in {"1", "ON", "YES", "TRUE"}


def _metrics(task_results: Mapping[str, Any]) -> dict[str, float]:
    """``{"bits_per_byte,none": x, "bits_per_byte_stderr,none": "N/A", "alias": ..}`` ->
    ``{"bits_per_byte": x}`` (stderr entries and non-numbers dropped)."""
    out = {}
    for key, value in task_results.items():
        metric = key.split(",", 1)[0]
        if metric.endswith("_stderr") or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[metric] = float(value)
    return out


def check_tasks(
    tasks: Sequence[str], include_path: Path | None, *, offline: bool | None = None
) -> None:
    """Build every task (loading its dataset) without a model: the ConfigError / DataError
    that :func:`evaluate_tasks` would raise, before any model work (arguments as there)."""
    with _hf_offline(offline), _keep_global_rngs():
        _load_tasks(_route_tasks(include_path, list(tasks)), _is_offline(offline))


def evaluate_tasks(
    model: Any,
    tokenizer: Any,
    tasks: list[str],
    include_path: Path | None,
    batch_size: int,
    limit: int | None = None,
    *,
    max_length: int | None = None,
    offline: bool | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate an in-memory model on lm-eval tasks; returns ``{task: {metric: value}}``.

    Uses lm-eval's lower-level ``evaluate`` (``simple_evaluate`` would re-seed the global
    RNGs; the global RNG states are restored afterwards anyway), no bootstrap
    (``bootstrap_iters=0``), no response or request cache (the model changes between stages)
    and no sample logging. Every task is built (its dataset loaded) before the model runs.

    Args:
        model: A causal LM (``transformers`` model, or a peft model around one). Its train/eval
            mode is restored afterwards.
        tokenizer: Its tokenizer.
        tasks: lm-eval task names (ours from :func:`write_holdout_tasks`, or bundled ones).
        include_path: Directory of extra task YAMLs (``None``: bundled tasks only). A task
            found there is built from that directory alone (fast; so it cannot include a
            bundled task); other names come from lm-eval's bundled index (built once).
        batch_size: Sequences per forward pass.
        limit: At most this many documents per task (``None``: all).
        max_length: Context window for lm-eval's rolling windows (``None``: the model's).
        offline: Hugging Face offline mode for the call; ``None`` keeps ``HF_HUB_OFFLINE`` when
            set and is offline otherwise.

    Raises:
        ConfigError: an empty task list, an unknown task (with how to list the known ones), or
            a task whose YAML cannot be built.
        DataError: a task whose dataset is missing (e.g. a Hub dataset offline that is not in
            the datasets cache), before any model evaluation.
    """
    if not tasks or isinstance(tasks, str):
        raise ConfigError(f"tasks must be a non-empty list of lm-eval task names, got {tasks!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1 or None, got {limit!r}.")
    was_training = bool(getattr(model, "training", False))
    with _hf_offline(offline), _keep_global_rngs():
        from lm_eval.evaluator import evaluate
        from lm_eval.models.huggingface import HFLM

        task_dict = _load_tasks(_route_tasks(include_path, tasks), _is_offline(offline))
        for task in task_dict["tasks"].values():
            if task.get_config("num_fewshot") is None:
                task.set_config(key="num_fewshot", value=0)
            task.set_fewshot_seed(seed=1234)  # a task-local random.Random, not the global one
        hf_log, quiet = logging.getLogger(HFLM.__module__), _DropExpectedWarnings()
        hf_log.addFilter(quiet)
        try:
            lm = HFLM(
                pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length
            )
            results = evaluate(
                lm=lm,
                task_dict=task_dict,
                limit=limit,
                bootstrap_iters=0,
                cache_requests=False,
                log_samples=False,
            )
        finally:
            hf_log.removeFilter(quiet)
            model.train(was_training)
    if results is None:  # pragma: no cover - only non-zero ranks get None
        return {}
    return {name: _metrics(res) for name, res in results["results"].items()}


__all__ = [
    "METRICS",
    "UNITS",
    "bits_per_byte",
    "check_tasks",
    "evaluate_tasks",
    "nll_to_bits_per_byte",
    "write_holdout_tasks",
]
