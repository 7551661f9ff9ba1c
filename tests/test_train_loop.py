"""The training loop: gradient accumulation, clipping, the LR schedule and the batch sampler."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from transformers import get_scheduler

from continual.data.domain import TextBlocks
from continual.train.loop import NumericalError, StepRecord, batch_indices, train_stage

VOCAB, BLOCK_LEN, N_BLOCKS = 32, 12, 24


class TinyLM(torch.nn.Module):
    """Next-token model with the one call train_stage makes: model(input_ids=, labels=).loss,
    the mean token cross-entropy of the batch (like a transformers causal LM)."""

    def __init__(self, seed: int = 0, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = torch.nn.Embedding(VOCAB, 16, dtype=dtype)
        self.mix = torch.nn.Linear(32, 16, dtype=dtype)  # the token and its predecessor
        self.head = torch.nn.Linear(16, VOCAB, dtype=dtype)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> SimpleNamespace:
        h = self.embed(input_ids[:, :-1])
        prev = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)
        logits = self.head(torch.tanh(self.mix(torch.cat([h, prev], dim=-1))))
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten())
        return SimpleNamespace(loss=loss)


def _blocks(seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, VOCAB, (N_BLOCKS, BLOCK_LEN), generator=torch.Generator().manual_seed(seed)
    )


def _cfg(**overrides):
    base = {
        "steps": 4, "batch_size": 8, "micro_batch_size": 8, "lr": 1e-2, "weight_decay": 0.0,
        "warmup_steps": 1, "scheduler": "cosine", "max_grad_norm": 1.0,
    }  # fmt: skip
    return OmegaConf.create({**base, **overrides})


def _train(model: torch.nn.Module, seed: int = 0, **overrides) -> list[StepRecord]:
    params = [p for p in model.parameters() if p.requires_grad]
    return train_stage(
        model, [{"params": params}], TextBlocks(_blocks()), _cfg(**overrides), torch.device("cpu"),
        torch.Generator().manual_seed(seed),
    )  # fmt: skip


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


# --- gradient accumulation -------------------------------------------------------------------


@pytest.mark.parametrize("micro", [1, 2, 3, 4, 16])  # 3: uneven chunks 3+3+2; 16: > batch
def test_gradient_accumulation_equals_one_big_batch(micro: int) -> None:
    whole, split = TinyLM(), TinyLM()
    assert torch.equal(_flat(whole), _flat(split))
    ref = _train(whole, max_grad_norm=0.0)
    got = _train(split, max_grad_norm=0.0, micro_batch_size=micro)
    assert [r.step for r in got] == [r.step for r in ref] == [1, 2, 3, 4]
    for a, b in zip(got, ref, strict=True):
        assert a.loss == pytest.approx(b.loss, rel=1e-10)
        assert a.grad_norm == pytest.approx(b.grad_norm, rel=1e-9)
        assert a.lr == b.lr
    torch.testing.assert_close(_flat(split), _flat(whole), rtol=1e-9, atol=1e-12)
    assert not torch.equal(_flat(whole), _flat(TinyLM()))  # it did train


def test_step_loss_is_the_batch_mean_before_the_update() -> None:
    model = TinyLM()
    fresh = TinyLM()
    first_batch = next(batch_indices(N_BLOCKS, 8, torch.Generator().manual_seed(0)))
    ids = _blocks()[first_batch]
    with torch.no_grad():
        expected = float(fresh(input_ids=ids, labels=ids).loss)
    records = _train(model, micro_batch_size=2)
    assert records[0].loss == pytest.approx(expected, rel=1e-10)
    assert len(records) == 4 and all(isinstance(r, StepRecord) for r in records)
    assert not model.training  # left in eval mode


# --- clipping ----------------------------------------------------------------------------------


class _RecordingAdamW(torch.optim.AdamW):
    """AdamW that records the global norm of the gradients it is asked to apply."""

    applied: list[float] = []

    def step(self, closure=None):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        type(self).applied.append(float(torch.stack([g.norm() for g in grads]).norm()))
        return super().step(closure)


class _SGD(torch.optim.SGD):
    """Plain SGD in AdamW's place: the parameter change is exactly -lr * applied gradient."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay)


@pytest.mark.parametrize("clip", [0.05, 0.0])
def test_applied_gradient_is_clipped_and_the_logged_norm_is_pre_clip(monkeypatch, clip) -> None:
    monkeypatch.setattr(torch.optim, "AdamW", _RecordingAdamW)
    monkeypatch.setattr(_RecordingAdamW, "applied", [])
    records = _train(TinyLM(), max_grad_norm=clip, steps=5)
    applied = _RecordingAdamW.applied
    assert len(applied) == len(records) == 5
    logged = [r.grad_norm for r in records]
    assert min(logged) > 0.05  # the clip below really bites at every step
    if clip:
        assert applied == pytest.approx([clip] * 5, rel=1e-4)  # torch divides by norm + 1e-6
    else:  # 0 disables clipping; the norm is still measured
        assert applied == pytest.approx(logged, rel=1e-9)


def test_clipping_scales_the_update_and_disabling_it_matches_the_raw_gradient(monkeypatch):
    monkeypatch.setattr(torch.optim, "AdamW", _SGD)
    lr = 0.1
    runs = {}
    for clip in (0.0, 0.05, 1e6):
        model = TinyLM()
        before = _flat(model)
        (record,) = _train(model, steps=1, lr=lr, warmup_steps=0, scheduler="constant",
                           max_grad_norm=clip)  # fmt: skip
        runs[clip] = (before - _flat(model)) / lr, record.grad_norm
    raw, raw_norm = runs[0.0]
    assert raw.norm().item() == pytest.approx(raw_norm, rel=1e-9)  # logged = applied, unclipped
    clipped, clipped_norm = runs[0.05]
    assert clipped_norm == pytest.approx(raw_norm, rel=1e-12)  # logged before clipping
    assert clipped.norm().item() == pytest.approx(0.05, rel=1e-4)  # torch: norm + 1e-6
    torch.testing.assert_close(clipped, raw * (0.05 / raw_norm), rtol=1e-4, atol=1e-12)
    loose, loose_norm = runs[1e6]  # a bound above the norm leaves the gradient as it is
    torch.testing.assert_close(loose, raw, rtol=1e-9, atol=1e-12)
    assert loose_norm == pytest.approx(raw_norm, rel=1e-12)


def test_non_finite_loss_stops_the_stage() -> None:
    class NaNLM(TinyLM):
        def forward(self, input_ids, labels):
            out = super().forward(input_ids, labels)
            return SimpleNamespace(loss=out.loss * float("nan"))

    with pytest.raises(NumericalError, match="non-finite"):
        _train(NaNLM())


# --- learning-rate schedule --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cosine", "linear", "constant_with_warmup"])
@pytest.mark.parametrize(("steps", "warmup"), [(7, 2), (5, 0), (4, 4)])
def test_logged_lr_follows_the_transformers_schedule(name: str, steps: int, warmup: int) -> None:
    lr = 3e-3
    records = _train(TinyLM(), scheduler=name, steps=steps, warmup_steps=warmup, lr=lr)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=steps)
    expected = []
    for _ in range(steps):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert [r.lr for r in records] == pytest.approx(expected, abs=1e-15)
    # the same by hand: step k (1-based) uses the factor at k - 1, so warm-up starts at 0
    for k, r in enumerate(records, start=1):
        t = k - 1
        if t < warmup:
            factor = t / warmup
        elif name == "constant_with_warmup":
            factor = 1.0
        elif name == "linear":
            factor = (steps - t) / (steps - warmup)
        else:
            factor = 0.5 * (1 + math.cos(math.pi * (t - warmup) / (steps - warmup)))
        assert r.lr == pytest.approx(lr * factor, abs=1e-15), (k, r.lr)


# --- batch sampler -----------------------------------------------------------------------------


@pytest.mark.parametrize(("n_blocks", "batch_size"), [(12, 4), (10, 4), (7, 3), (3, 8), (5, 5)])
def test_batch_indices_visits_every_block_once_per_epoch(n_blocks: int, batch_size: int) -> None:
    sampler = batch_indices(n_blocks, batch_size, torch.Generator().manual_seed(0))
    batches = [next(sampler) for _ in range(4 * n_blocks)]
    assert all(len(b) == batch_size and b.dtype == torch.long for b in batches)
    draws = torch.cat(batches).tolist()
    epochs = [draws[i : i + n_blocks] for i in range(0, len(draws) - n_blocks + 1, n_blocks)]
    assert len(epochs) >= 4
    for epoch in epochs:  # epoch boundaries fall anywhere inside a batch
        assert sorted(epoch) == list(range(n_blocks))
    assert len({tuple(e) for e in epochs}) > 1  # reshuffled, not one order repeated


def test_batch_indices_is_deterministic_per_seed() -> None:
    def first(seed: int, k: int = 9) -> list[list[int]]:
        sampler = batch_indices(10, 4, torch.Generator().manual_seed(seed))
        return [next(sampler).tolist() for _ in range(k)]

    assert first(0) == first(0)
    assert first(1) == first(1)
    assert first(0) != first(1)
