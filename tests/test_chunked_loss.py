"""The chunked text loss (``train.loss_chunk_tokens``): the same losses, gradients and weights as
the full-logits loss up to float rounding, for the methods whose terms do not read logits."""

from __future__ import annotations

import pytest
import torch

from continual.data.domain import TextBlocks
from continual.errors import ConfigError
from continual.methods import build_method
from continual.models.loading import load_model
from continual.train import loop
from continual.train.loop import decoder_and_head, loss_chunk_tokens, train_stage
from tests.conftest import compose_config
from tests.test_train_loop import TinyLM


def _blocks(vocab: int, seed: int) -> torch.Tensor:
    return torch.randint(0, vocab, (8, 16), generator=torch.Generator().manual_seed(seed))


def _train_chain(tmp_path, method: str, chunk: int, monkeypatch) -> tuple[list, dict, int]:
    """Two stages of ``method`` on tiny_random (micro-batches of 2, so 4 per step); returns
    the step records, the trainable weights after them and the chunked-loss calls."""
    calls = []
    real = loop.chunked_text_loss
    monkeypatch.setattr(loop, "chunked_text_loss", lambda *a: calls.append(1) or real(*a))
    cfg = compose_config(["+sequence=med_code", "model=tiny_random", f"method={method}",
                          "train.steps=3", "train.batch_size=8", "train.micro_batch_size=2",
                          "train.lr=1e-2", "train.warmup_steps=0",
                          f"train.loss_chunk_tokens={chunk}"])  # fmt: skip
    loaded = load_model(cfg.model, tmp_path / "cache")
    torch.manual_seed(0)
    built = build_method(cfg.method)
    model = built.setup(loaded.model)
    built.bind({}, loaded.device, cfg.train, 0)
    vocab, records = model.config.vocab_size, []
    for stage, domain in enumerate(["med", "code"], start=1):
        built.before_stage(stage, domain)
        torch.manual_seed(stage)  # the same dropout masks on both sides
        records += train_stage(
            model, built.param_groups(cfg.train.lr), TextBlocks(_blocks(vocab, stage)),
            cfg.train, loaded.device, torch.Generator().manual_seed(stage),
            extra_losses=built.extra_losses, beside=built.beside(),
            extra_uses_logits=built.extra_losses_use_logits,
        )  # fmt: skip
        if stage == 1:  # EWC's Fisher, LwF's teacher, O-LoRA's frozen adapter
            built.data = {"med": _FisherData(_blocks(vocab, 7))}
            built.after_stage(stage, domain)
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    weights |= {n: p.detach().clone() for m in built.beside() for n, p in m.named_parameters()}
    return records, weights, len(calls)


class _FisherData:
    def __init__(self, blocks: torch.Tensor) -> None:
        self.blocks = blocks

    def training_set(self) -> TextBlocks:
        return TextBlocks(self.blocks)


@pytest.mark.parametrize("method", ["lora", "crma", "ewc", "olora", "lwf"])
def test_chunked_loss_trains_like_full_logits(tmp_path, monkeypatch, method: str) -> None:
    full, full_weights, full_calls = _train_chain(tmp_path, method, 0, monkeypatch)
    chunked, weights, calls = _train_chain(tmp_path, method, 7, monkeypatch)  # 15 = 7 + 7 + 1
    assert full_calls == 0
    # LwF distils the logits, so it keeps the full-logits loss; the others chunk every micro-batch
    assert calls == (0 if method == "lwf" else 2 * 3 * 4)
    assert len(chunked) == len(full) == 6
    for a, b in zip(chunked, full, strict=True):
        assert a.loss == pytest.approx(b.loss, rel=1e-5)
        assert a.grad_norm == pytest.approx(b.grad_norm, rel=1e-4)
        assert a.terms.keys() == b.terms.keys()
        for name in a.terms:
            assert a.terms[name] == pytest.approx(b.terms[name], rel=1e-4, abs=1e-7)
    if method == "ewc":
        assert chunked[-1].terms["ewc"] > 0  # the penalty was active in stage 2
    assert weights.keys() == full_weights.keys()
    for name, tensor in weights.items():
        # AdamW divides by sqrt(v): float-rounding differences in near-zero gradients become
        # differences of up to ~1% of one lr-sized step (lr 1e-2); a wrong gradient moves lr
        torch.testing.assert_close(tensor, full_weights[name], rtol=0, atol=2e-4, msg=name)


def test_a_model_without_a_known_head_keeps_the_full_loss(monkeypatch) -> None:
    assert decoder_and_head(TinyLM()) is None
    monkeypatch.setattr(loop, "chunked_text_loss", lambda *a: pytest.fail("chunked"))
    model = TinyLM()
    params = [p for p in model.parameters() if p.requires_grad]
    cfg = compose_config(["+sequence=med_code", "model=tiny_random", "train.steps=1",
                          "train.warmup_steps=0", "train.loss_chunk_tokens=4"]).train  # fmt: skip
    blocks = torch.randint(0, 32, (8, 12), generator=torch.Generator().manual_seed(0))
    records = train_stage(model, [{"params": params}], TextBlocks(blocks), cfg,
                          torch.device("cpu"), torch.Generator().manual_seed(0))  # fmt: skip
    assert len(records) == 1


@pytest.mark.parametrize("value", [-1, 2.5, "many", True])
def test_impossible_chunk_sizes_are_refused(value) -> None:
    with pytest.raises(ConfigError, match="loss_chunk_tokens"):
        loss_chunk_tokens({"loss_chunk_tokens": value})
    assert loss_chunk_tokens({}) == 0 and loss_chunk_tokens({"loss_chunk_tokens": None}) == 0
