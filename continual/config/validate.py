"""Early checks on a composed config: every problem is reported before any training starts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from continual.errors import ConfigError
from continual.runtime import check_malloc_retain, check_threads

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def available(group: str) -> list[str]:
    """Names of the configs in a ``conf/<group>/`` directory."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _positive(value: object, key: str, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigError(f"{key}={value!r} must be a positive, finite number. {fix}")


def validate_config(cfg: DictConfig) -> list[str]:
    """Check a composed run config; return the ordered domains to evaluate (sequence + general)."""
    if cfg.get("sequence") is None:
        raise ConfigError(
            "No domain sequence selected. Add one, e.g. `+sequence=med_legal_code` "
            f"(available: {', '.join(available('sequence'))})."
        )
    order = list(cfg.sequence.order)
    if not order:
        raise ConfigError("sequence.order is empty; list at least one domain to train on.")
    repeated = sorted({d for d in order if order.count(d) > 1})
    if repeated:
        raise ConfigError(
            f"sequence.order {order} repeats {repeated}; each domain is one stage, list it once."
        )
    domains = cfg.get("domains") or {}
    general = cfg.eval.get("general_domain")
    wanted = order + ([general] if general else [])
    missing = [d for d in wanted if d not in domains]
    if missing:
        raise ConfigError(
            f"Unknown domain(s) {missing}: the sequence must compose them from conf/domain "
            f"(available: {', '.join(available('domain'))})."
        )
    for d in order:
        if domains[d].get("holdout_only"):
            raise ConfigError(f"Domain {d!r} is holdout-only (evaluation); it cannot be trained.")
    _check_domain_kinds(cfg, order, general)
    for d in wanted:
        _check_source_given(d, domains[d])
    train, ev = cfg.train, cfg.eval
    epochs = train.get("epochs")
    if epochs is not None:
        _positive(epochs, "train.epochs", "Passes over each domain's training set, or null.")
    _positive(
        train.steps, "train.steps", "Give the optimizer steps per stage, e.g. train.steps=20."
    )
    _positive(train.lr, "train.lr", "Use a learning rate such as train.lr=1e-3.")
    _positive(train.batch_size, "train.batch_size", "Blocks per step, e.g. train.batch_size=8.")
    _positive(train.micro_batch_size, "train.micro_batch_size", "e.g. train.micro_batch_size=4.")
    _positive(ev.holdout_blocks, "eval.holdout_blocks", "e.g. eval.holdout_blocks=16.")
    _positive(ev.batch_size, "eval.batch_size", "e.g. eval.batch_size=8.")
    if not isinstance(train.block_len, int) or train.block_len < 2:
        raise ConfigError(f"train.block_len={train.block_len!r} must be an integer >= 2.")
    if epochs is None and not 0 <= train.warmup_steps <= train.steps:
        raise ConfigError(
            f"train.warmup_steps={train.warmup_steps} must lie in [0, train.steps={train.steps}]."
        )
    if train.max_grad_norm is not None and not 0 <= train.max_grad_norm < math.inf:
        raise ConfigError("train.max_grad_norm must be a finite number >= 0 (0 disables clipping).")
    if not 0 <= train.weight_decay < math.inf:
        raise ConfigError(f"train.weight_decay={train.weight_decay!r} must be finite and >= 0.")
    _check_scheduler(str(train.scheduler))
    check_threads(cfg.get("threads"))
    check_malloc_retain(cfg.get("cpu_malloc_retain", True))
    if not isinstance(cfg.get("data_cache", True), bool):
        raise ConfigError(f"data_cache={cfg.data_cache!r} must be true or false.")
    from continual.data.split import check_split

    check_split(str(ev.get("split", "holdout")))
    from continual.train.clipping import build_clipper

    build_clipper(train)  # an unknown train.clipping or ZClip setting fails here, before data
    if str(train.get("mixed_precision", "no")) not in ("no", "bf16"):
        raise ConfigError(
            f"train.mixed_precision={train.mixed_precision!r} is not one of no, bf16."
        )
    from continual.eval.holdout_tasks import UNITS

    unit = cfg.eval.get("lm_eval_unit", "documents")
    if unit not in UNITS:
        raise ConfigError(
            f"eval.lm_eval_unit={unit!r} is unknown; use documents (whole holdout documents) or "
            "blocks (the holdout blocks our loss scores)."
        )
    lora = cfg.method.get("lora")
    if lora is not None:
        _positive(lora.r, "method.lora.r", "LoRA rank, e.g. method.lora.r=16.")
        _positive(lora.alpha, "method.lora.alpha", "e.g. method.lora.alpha=32.")
        if not 0 <= lora.dropout < 1:
            raise ConfigError(f"method.lora.dropout={lora.dropout} must lie in [0, 1).")
        from continual.methods.lora_init import peft_init, rewrites_base
        from continual.models.loading import is_quantised

        init = lora.get("init", "default")
        peft_init(init)  # an unknown name fails here
        if rewrites_base(init) and is_quantised(cfg.model):
            raise ConfigError(
                f"method.lora.init={init} rewrites the base weights, which a quantised "
                f"({cfg.model.quantization}) base cannot hold exactly; use method.lora.init="
                "default (or gaussian) with a quantised model, or drop model.quantization."
            )
    return wanted


KINDS = ("text", "pairs")


def _check_domain_kinds(cfg: DictConfig, order: list[str], general: str | None) -> None:
    """Every domain is ``text`` or ``pairs``; pairs domains are trained, and never given to an
    option that reads text blocks (the general-text holdout, lm-eval's holdout tasks)."""
    pairs = []
    for name, domain in cfg.domains.items():
        kind = domain.get("kind", "text")
        if kind not in KINDS:
            raise ConfigError(
                f"domain {name!r}: kind={kind!r} is not one of {', '.join(KINDS)}; fix "
                f"`domains.{name}.kind`."
            )
        if kind == "pairs" and (name in order or name == general):
            pairs.append(name)
    if general in pairs:
        raise ConfigError(
            f"eval.general_domain={general!r} is a pairs domain, but general retention reads "
            "holdout text; name a holdout-only text domain (e.g. general) or set it to null."
        )
    if pairs and cfg.eval.get("lm_eval_holdout"):
        raise ConfigError(
            f"eval.lm_eval_holdout=true turns each domain's holdout text into an lm-eval "
            f"perplexity task, but {pairs} are pairs domains (scored by accuracy); set "
            "eval.lm_eval_holdout=false."
        )


# What a reader's missing `source.path` is, and the configs that read the other kind of source.
_PATH_KINDS = {
    "read_pairs_jsonl": "a local JSONL file of {\"prompt\": ..., \"response\": ...} lines",
    "read_pairs_hf": "a Hugging Face dataset id (internet once, then cached) or a save_to_disk "
    "directory",
    "read_jsonl": "a local JSONL file", "read_text": "a local text file or directory",
    "read_hf": "a Hugging Face dataset id (internet once, then cached) or a save_to_disk directory",
}  # fmt: skip
# conf/domain/ configs that read a user's data, by domain kind: (config, its reader, the example)
_SOURCE_CONFIGS = {
    "pairs": (("pairs_jsonl", "read_pairs_jsonl", "$PWD/{}.jsonl"),
              ("pairs_hf", "read_pairs_hf", "<Hub dataset id>")),
    "text": (("local_jsonl", "read_jsonl", "$PWD/{}.jsonl"),
             ("hf_dataset", "read_hf", "<Hub dataset id>")),
}  # fmt: skip


def _check_source_given(name: str, domain: Any) -> None:
    """A domain whose `source` still holds a `???` (a value the user must give, e.g. the file
    of a `pairs_jsonl` domain) fails here, before any model is loaded, naming the key to set."""
    source = domain.get("source")
    if not isinstance(source, DictConfig):
        return
    missing = [k for k in source if OmegaConf.is_missing(source, k)]
    if not missing:
        return
    reader = str(source.get("_target_", "")).rsplit(".", 1)[-1]
    if "path" in missing:
        what = _PATH_KINDS.get(reader, "the reader's input")
        configs = _SOURCE_CONFIGS.get(str(domain.get("kind", "text")), _SOURCE_CONFIGS["text"])
        others = " or ".join(
            f"domain@domains.{name}={config} domains.{name}.source.path={example.format(name)}"
            for config, other, example in configs
            if other != reader
        )
        raise ConfigError(
            f"domain {name!r} needs a dataset: set domains.{name}.source.path=... ({what})"
            + (f", or read it from elsewhere: {others}." if others else ".")
        )
    keys = ", ".join(f"domains.{name}.source.{k}=..." for k in missing)
    raise ConfigError(f"domain {name!r} needs {keys} (`???` in its config marks a value to give).")


def _check_scheduler(name: str) -> None:
    from transformers import SchedulerType

    known = [s.value for s in SchedulerType]
    if name not in known:
        raise ConfigError(
            f"train.scheduler={name!r} is not a transformers scheduler; use one of "
            f"{', '.join(known)}."
        )


def validate_for_model(cfg: DictConfig, model: Any, max_positions: int) -> None:
    """Checks that need the loaded base model (made before any data, training or evaluation):
    the block and the prompted-baseline context fit the model's context, and every LoRA target
    module exists in it."""
    block_len = int(cfg.train.block_len)
    if block_len > max_positions > 0:
        raise ConfigError(
            f"train.block_len={block_len} exceeds the model's context of {max_positions} "
            "tokens; lower train.block_len."
        )
    context = int(cfg.eval.prompted_context_tokens)
    if cfg.eval.prompted_k and context + block_len > max_positions > 0:
        raise ConfigError(
            f"the prompted baseline puts eval.prompted_context_tokens={context} context tokens "
            f"before each {block_len}-token block, more than the model's context of "
            f"{max_positions}; lower eval.prompted_context_tokens to at most "
            f"{max(max_positions - block_len, 0)}, or set eval.prompted_k=0."
        )
    k = int(cfg.eval.prompted_k or 0)
    for name, domain in cfg.domains.items():
        tokens = int(domain.get("max_tokens") or 0) if domain.get("kind") == "pairs" else 0
        if tokens * (k + 1) > max_positions > 0:
            raise ConfigError(
                f"domain {name!r}: max_tokens={tokens} per example, with eval.prompted_k={k} "
                f"demonstrations in the prompted baseline, may exceed the model's context of "
                f"{max_positions}; lower `domains.{name}.max_tokens` or eval.prompted_k."
            )
    lora = cfg.method.get("lora")
    targets = None if lora is None else lora.get("target_modules")
    if targets is not None and not isinstance(targets, str):
        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = sorted(set(targets) - present)
        if missing:
            linear = sorted(
                {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if _is_linear(m)}
                - {"lm_head"}
            )
            raise ConfigError(
                f"method.lora.target_modules names {missing}, which the model does not have; "
                f"its linear layers are {linear} (or use target_modules=all-linear)."
            )


def _is_linear(module: Any) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear) or type(module).__name__.startswith("Linear")
