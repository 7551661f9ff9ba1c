"""One training stage: AdamW steps on one domain's training set (packed text blocks, or padded
input-output pairs whose loss counts response tokens only), sized in steps or in epochs."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm
from transformers import get_scheduler

from continual.errors import ConfigError, ContinualError
from continual.train import distributed as dist
from continual.train.clipping import build_clipper, group_norm

IGNORE = -100  # label of positions without loss (prompt and padding of pairs)


log = logging.getLogger(__name__)


class TrainingSet(Protocol):
    """Anything a stage can draw batches from (see ``TextBlocks`` and ``EncodedPairs``)."""

    def __len__(self) -> int: ...

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]: ...


# A method's extra loss terms for one micro-batch (``Method.extra_losses``): called with the
# micro-batch (on the device), the logits at the positions that carry task loss and their
# targets (``IGNORE`` where none); returns name -> scalar tensor, each a mean over the
# micro-batch (a constant such as a weight penalty is returned as it is). Terms that declare
# they do not read the logits (``train_stage(extra_uses_logits=False)``) get ``None`` for
# both when the loss runs in chunks (``train.loss_chunk_tokens``), which never holds them all.
ExtraLosses = Callable[
    [dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor | None], dict[str, torch.Tensor]
]

# Causal-LM model types whose logits are exactly ``output_head(decoder(input_ids))`` (no
# soft-capping or scaling after the head): the text loss may run the head in chunks.
CHUNKABLE_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


class NumericalError(ContinualError):
    """A NaN or Inf loss or gradient: the stage cannot continue."""


@dataclass
class StepRecord:
    step: int  # 1-based optimizer step within the stage
    loss: float  # mean token cross-entropy of the batch (nats)
    grad_norm: float  # global L2 norm of all trainable gradients, before clipping
    lr: float  # learning rate of the first parameter group at this step
    epoch: int = 1  # 1-based pass over the training set that this step's batch belongs to
    grad_norm_lora: float = math.nan  # the same over the groups named "lora" only (nan: none)
    terms: dict[str, float] = field(default_factory=dict)  # a method's extra loss terms
    grad_norm_clipped: float = math.nan  # the global norm after clipping: what the step used

    def row(self) -> dict[str, Any]:
        """The record as one train_log.csv row: the fields, then (for a method with extra loss
        terms) ``loss_<name>`` per term and ``loss_total``, what the optimizer minimised."""
        row = asdict(self)
        terms = row.pop("terms")
        if terms:
            row |= {f"loss_{name}": value for name, value in terms.items()}
            row["loss_total"] = self.loss + sum(terms.values())
        return row


def stage_steps(cfg: Any, n_train: int) -> int:
    """Optimizer steps of a stage: ``cfg.steps``, or ``ceil(cfg.epochs * n_train / batch_size)``
    when ``cfg.epochs`` is set (so every training example is seen ``epochs`` times)."""
    epochs = cfg.get("epochs")
    if epochs is None:
        return int(cfg.steps)
    steps = max(1, math.ceil(float(epochs) * n_train / int(cfg.batch_size)))
    if cfg.warmup_steps > steps:
        raise ConfigError(
            f"train.epochs={epochs} gives {steps} steps on {n_train} training items, fewer than "
            f"train.warmup_steps={cfg.warmup_steps}; lower train.warmup_steps."
        )
    return steps


def batch_indices(
    n_blocks: int, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Endless batches of block indices: shuffled epochs, no block repeated within an epoch."""
    pending = torch.empty(0, dtype=torch.long)
    while True:
        while len(pending) < batch_size:
            pending = torch.cat([pending, torch.randperm(n_blocks, generator=generator)])
        yield pending[:batch_size]
        pending = pending[batch_size:]


def train_stage(
    model: torch.nn.Module,
    param_groups: list[dict],
    train_set: TrainingSet,
    cfg: DictConfig,
    device: torch.device,
    generator: torch.Generator,
    desc: str = "train",
    extra_losses: ExtraLosses | None = None,
    steps: int | None = None,
    beside: list[torch.nn.Module] | None = None,
    extra_uses_logits: bool = True,
) -> list[StepRecord]:
    """Train for ``steps`` optimizer steps (``None``: :func:`stage_steps`) under one LR schedule;
    returns one record per step.

    ``cfg``: steps or epochs, batch_size, micro_batch_size, lr, weight_decay, warmup_steps,
    scheduler, max_grad_norm (0 disables clipping; the norm is still measured), clipping
    (``norm`` or ``zclip``, :mod:`continual.train.clipping`). A batch's loss
    is the mean token cross-entropy over its target tokens (every token of a text block; the
    response tokens of pairs). Logs the mean training loss of every epoch. Raises
    NumericalError on a non-finite loss or gradient norm. ``extra_losses``: a method's loss
    terms added to the task loss of every micro-batch (see :data:`ExtraLosses`), each weighted
    by the micro-batch's share of the batch's target tokens and logged per step.

    Launched distributed (:mod:`continual.train.distributed`): ``model`` and ``beside`` (modules
    run by hooks, e.g. CRMA) train in DDP, each process on its share of every batch's rows.
    ``train.mixed_precision: bf16`` runs the forward under bf16 autocast on CUDA.
    ``train.loss_chunk_tokens`` > 0: the text loss runs the output head and cross-entropy on
    that many positions at a time (:func:`chunked_text_loss`; the same loss up to float
    rounding), unless ``extra_losses`` read the logits (``extra_uses_logits``), the run is
    distributed or the model type is not in :data:`CHUNKABLE_MODEL_TYPES`.
    """
    steps = stage_steps(cfg, len(train_set)) if steps is None else steps
    params = [p for group in param_groups for p in group["params"]]
    optimizer = torch.optim.AdamW(param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(
        cfg.scheduler, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=steps
    )
    micro = min(cfg.micro_batch_size, cfg.batch_size)
    batches = batch_indices(len(train_set), cfg.batch_size, generator)
    clip = build_clipper(cfg)
    lora = [p for group in param_groups if group.get("name") == "lora" for p in group["params"]]
    records: list[StepRecord] = []
    world = dist.world_size()
    chunk_tokens = loss_chunk_tokens(cfg)
    chunkable = chunk_tokens and world == 1 and not (extra_losses and extra_uses_logits)
    head = decoder_and_head(model) if chunkable else None  # None: the full-logits loss
    if world > 1:  # DDP: the gradients are all-reduced in each batch's last backward
        if int(cfg.batch_size) < world:
            raise ConfigError(
                f"train.batch_size={cfg.batch_size} is smaller than the {world} processes."
            )
        model = dist.wrap(model, list(beside or []), device)
    model.train()
    bar = tqdm(range(1, steps + 1), desc=desc, unit="step", disable=not dist.is_main())
    for step in bar:
        epoch = (step - 1) * int(cfg.batch_size) // len(train_set) + 1
        batch = train_set.batch(next(batches))
        optimizer.zero_grad(set_to_none=True)
        terms = Terms(extra_losses) if extra_losses is not None else None
        with autocast(cfg, device):
            loss_value = _accumulate(model, batch, micro, device, terms, world, head, chunk_tokens)
        logged = terms.values if terms is not None else {}
        logged = {k: dist.all_sum(v) for k, v in logged.items()} if world > 1 else logged
        partial = lora and len(lora) < len(params)  # else the global norm is the LoRA norm
        lora_norm = group_norm(lora) if partial else math.nan
        grad_norm = clip(params)
        if lora and not partial:
            lora_norm = grad_norm
        total = loss_value + sum(logged.values())
        if not (math.isfinite(total) and math.isfinite(grad_norm)):
            raise NumericalError(
                f"{desc}: non-finite loss ({total}) or gradient norm ({grad_norm}) at step "
                f"{step}. Lower train.lr, keep train.max_grad_norm > 0, or check the data."
            )
        clipped_norm = group_norm(params)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        records.append(
            StepRecord(step, loss_value, grad_norm, lr, epoch, lora_norm, logged, clipped_norm)
        )
        bar.set_postfix(loss=f"{loss_value:.3f}", gnorm=f"{grad_norm:.2f}")
    model.eval()
    _log_epochs(desc, records)
    return records


class Terms:
    """Calls a method's :data:`ExtraLosses` per micro-batch and sums each term over the batch,
    weighting a micro-batch by its share of the batch's target tokens (as the task loss)."""

    def __init__(self, extra_losses: ExtraLosses) -> None:
        self.extra_losses = extra_losses
        self.values: dict[str, float] = {}

    def add(
        self, part: dict[str, torch.Tensor], logits: torch.Tensor | None,
        targets: torch.Tensor | None, share: float,
    ) -> torch.Tensor | None:  # fmt: skip
        """The weighted sum of the micro-batch's terms, to add to its loss before backward
        (``None``: the method has none, and the loss is left exactly as it is)."""
        total = None
        for name, value in self.extra_losses(part, logits, targets).items():
            self.values[name] = self.values.get(name, 0.0) + float(value.detach()) * share
            total = value * share if total is None else total + value * share
        return total


def autocast(cfg: Any, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA with ``train.mixed_precision: bf16`` (``no``: nothing)."""
    mode = str(cfg.get("mixed_precision", "no"))
    if mode not in ("no", "bf16"):
        raise ConfigError(f"train.mixed_precision={mode!r} is not one of no, bf16")
    if mode == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _synced(model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
    """DDP's all-reduce in a batch's last backward only (``no_sync`` before it)."""
    no_sync = getattr(model, "no_sync", None)
    return contextlib.nullcontext() if last or no_sync is None else no_sync()


def loss_chunk_tokens(cfg: Any) -> int:
    """``train.loss_chunk_tokens`` (0: the model's own loss over full logits), checked."""
    value = cfg.get("loss_chunk_tokens", 0) or 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(
            f"train.loss_chunk_tokens={value!r} must be a whole number >= 0 (positions per "
            "chunk of the output head and loss; 0 computes the loss over full logits)."
        )
    return value


Head = tuple[torch.nn.Module, torch.nn.Module]  # (decoder stack, output head)


def decoder_and_head(model: torch.nn.Module) -> Head | None:
    """The decoder stack and output head of ``model`` (a peft model or a transformers causal
    LM) when its logits are ``head(decoder(input_ids).last_hidden_state)``, i.e. its model
    type is in :data:`CHUNKABLE_MODEL_TYPES`; ``None`` otherwise."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if getattr(config, "model_type", None) not in CHUNKABLE_MODEL_TYPES:
        return None
    get_decoder = getattr(base, "get_decoder", None)
    decoder = get_decoder() if get_decoder is not None else None
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    return None if decoder is None or head is None else (decoder, head)


def chunked_text_loss(ids: torch.Tensor, head: Head, chunk_tokens: int, weight: float) -> float:
    """Mean next-token cross-entropy over every position of the blocks ``ids``, with the
    gradient of ``weight`` times it accumulated into the parameters; the output head and the
    loss run on ``chunk_tokens`` positions at a time, each chunk's backward straight after its
    forward, so the logits of the whole batch (batch x length x vocabulary floats, 200 MB for
    8 x 128 tokens of a 49k vocabulary) never exist at once. The decoder runs once; its output
    gets the summed gradient of all chunks. Same loss and gradients as the full-logits loss up
    to float rounding (the sum runs in another order)."""
    decoder, output_head = head
    hidden = decoder(input_ids=ids, use_cache=False).last_hidden_state[:, :-1]
    flat = hidden.reshape(-1, hidden.shape[-1])
    targets = ids[:, 1:].reshape(-1)
    detached = flat.detach().requires_grad_(True)
    total = 0.0
    for start in range(0, len(targets), chunk_tokens):
        part = slice(start, start + chunk_tokens)
        logits = output_head(detached[part]).float()
        loss = torch.nn.functional.cross_entropy(logits, targets[part], reduction="sum")
        (loss * (weight / len(targets))).backward()
        total += float(loss.detach())
    flat.backward(detached.grad)
    return total / len(targets)


def _accumulate(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], micro: int, device: torch.device,
    terms: Terms | None = None, world: int = 1, head: Head | None = None,
    chunk_tokens: int = 0,
) -> float:  # fmt: skip
    """Forward/backward ``batch`` in micro-batches; gradients of the batch's mean token loss
    (plus the ``terms`` of a method, whose batch values they collect); returns that loss.
    ``world`` > 1: this process takes its share of the rows, and scales its part of the
    batch's loss by ``world``, so that DDP's average of the gradients is the full batch's.
    ``head`` (from :func:`decoder_and_head`; then ``chunk_tokens`` > 0): text blocks take the
    loss through :func:`chunked_text_loss`, and ``terms`` get no logits."""
    ids = batch["input_ids"]
    rows = dist.shard_rows(len(ids)) if world > 1 else slice(None)
    if "labels" not in batch:  # text: every position of every block is a target
        loss_sum = 0.0
        chunks = ids[rows].split(micro)
        for i, chunk in enumerate(chunks):
            chunk, share = chunk.to(device), len(chunk) / len(ids)
            if head is not None:
                loss = chunked_text_loss(chunk, head, chunk_tokens, share)
                extra = terms.add({"input_ids": chunk}, None, None, share) if terms else None
                if extra is not None and extra.requires_grad:  # (a constant has no gradient)
                    extra.backward()
                loss_sum += loss * len(chunk)
                continue
            with _synced(model, i == len(chunks) - 1):
                out = model(input_ids=chunk, labels=chunk)
                scaled = out.loss * share
                if terms is not None:
                    part = {"input_ids": chunk}
                    extra = terms.add(part, out.logits[:, :-1], chunk[:, 1:], share)
                    scaled = scaled if extra is None else scaled + extra
                (scaled * world if world > 1 else scaled).backward()
            loss_sum += float(out.loss.detach()) * len(chunk)
            del out  # its logits must not live on into the next micro-batch's forward
        return dist.all_sum(loss_sum) / len(ids)
    n_targets = int((batch["labels"][:, 1:] != IGNORE).sum())  # of the whole batch
    total, local = 0.0, {k: v[rows] for k, v in batch.items()}
    starts = range(0, len(local["input_ids"]), micro)
    for start in starts:
        with _synced(model, start == starts[-1]):
            part = {k: v[start : start + micro].to(device) for k, v in local.items()}
            logits, targets = response_logits(model, part)
            loss = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE,
                reduction="sum",
            ) / n_targets  # fmt: skip
            total += float(loss.detach())
            if terms is not None:
                share = int((targets != IGNORE).sum()) / n_targets
                extra = terms.add(part, logits, targets, share)
                loss = loss if extra is None else loss + extra
            (loss * world if world > 1 else loss).backward()
    return dist.all_sum(total)


def response_logits(
    model: torch.nn.Module, part: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at the positions whose next token is a target in any row of ``part`` and those
    targets (``IGNORE`` elsewhere): the output head runs on these positions only
    (``logits_to_keep``), not on every prompt and padding position, so a batch of short
    answers skips most of the 49k-vocabulary projection and softmax. Same loss as full logits
    up to float rounding; models whose forward lacks ``logits_to_keep`` get full logits."""
    targets = part["labels"][:, 1:]
    keep = (targets != IGNORE).any(dim=0).nonzero().squeeze(-1)
    inputs = {"input_ids": part["input_ids"], "attention_mask": part["attention_mask"]}
    try:
        logits = model(**inputs, logits_to_keep=keep).logits
    except TypeError:  # no logits_to_keep argument: score every position
        return model(**inputs).logits[:, :-1], targets
    return logits, targets[:, keep]


def _log_epochs(desc: str, records: list[StepRecord]) -> None:
    """One log line per epoch: the mean training loss of its steps."""
    epochs = sorted({r.epoch for r in records})
    for epoch in epochs:
        losses = [r.loss for r in records if r.epoch == epoch]
        log.info(
            "%s: epoch %d/%d, mean train loss %.4f over %d steps",
            desc, epoch, epochs[-1], sum(losses) / len(losses), len(losses),
        )  # fmt: skip
