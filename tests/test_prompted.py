"""The prompted baseline: k=0 is the plain holdout loss; context is only from training docs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from continual.data.domain import build_domain
from continual.errors import ConfigError, DataError
from continual.eval.holdout import holdout_nll
from continual.eval.prompted import prompt_contexts, prompted_holdout_nll
from continual.models.loading import load_model
from tests.conftest import CONF, JSONL_READER, _write_jsonl, prose_texts

BLOCK = 48
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    cfg = OmegaConf.load(Path(CONF) / "model" / "tiny_random.yaml")
    cfg.device = "cpu"
    return load_model(cfg, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def domain(tiny, tmp_path_factory: pytest.TempPathFactory):
    texts = prose_texts(30)
    for i in range(0, 30, 3):  # short documents: contexts of different lengths
        texts[i] = texts[i][:40]
    path = _write_jsonl(tmp_path_factory.mktemp("data") / "prose.jsonl", texts)
    cfg = {
        "source": {"_target_": JSONL_READER, "path": str(path), "text_field": "text",
                   "id_field": None},
        "max_documents": None, "holdout_documents": 6, "near_dedup": False, "min_chars": 20,
    }  # fmt: skip
    return build_domain("prose", cfg, tiny.tokenizer, BLOCK, holdout_blocks=6)


def _reference(model, tokenizer, blocks, contexts) -> float:
    """One sequence at a time, no padding: NLL of block tokens 2..n after the context."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for block, context in zip(blocks, contexts, strict=True):
            ids = torch.tensor([context + block.tolist()])
            logits = model(input_ids=ids).logits[0, :-1]
            c = len(context)
            scored = logits[c : c + len(block) - 1]
            total += float(F.cross_entropy(scored, block[1:], reduction="sum"))
            count += len(block) - 1
    return total / count


def test_k0_reproduces_the_plain_holdout_loss(tiny, domain) -> None:
    plain, _ = holdout_nll(tiny.model, domain.holdout_blocks, 4, CPU)
    prompted = prompted_holdout_nll(
        tiny.model, tiny.tokenizer, domain.holdout_blocks, domain.train_docs,
        k=0, context_tokens=64, batch_size=4, device=CPU,
    )  # fmt: skip
    assert prompted == pytest.approx(plain, rel=1e-5, abs=1e-6)


def test_context_tokens_are_masked_out(tiny, domain) -> None:
    k, budget = 3, 192
    contexts = prompt_contexts(tiny.tokenizer, domain.train_docs, 6, k, budget, seed=5)
    lengths = {len(c) for c in contexts}
    assert max(lengths) <= budget and len(lengths) > 1  # right padding is exercised
    expected = _reference(tiny.model, tiny.tokenizer, domain.holdout_blocks, contexts)
    got = prompted_holdout_nll(
        tiny.model, tiny.tokenizer, domain.holdout_blocks, domain.train_docs,
        k=k, context_tokens=budget, batch_size=4, device=CPU, seed=5,
    )  # fmt: skip
    assert got == pytest.approx(expected, rel=1e-5)
    plain, _ = holdout_nll(tiny.model, domain.holdout_blocks, 4, CPU)
    assert got != pytest.approx(plain, rel=1e-6)  # the context does change the predictions


def test_deterministic_by_seed_and_leaves_global_rng_alone(tiny, domain) -> None:
    state = torch.get_rng_state()
    args = (tiny.tokenizer, domain.train_docs, 6, 2, 64)
    assert prompt_contexts(*args, seed=1) == prompt_contexts(*args, seed=1)
    assert prompt_contexts(*args, seed=1) != prompt_contexts(*args, seed=2)
    run = [
        prompted_holdout_nll(
            tiny.model, tiny.tokenizer, domain.holdout_blocks, domain.train_docs,
            k=2, context_tokens=64, batch_size=3, device=CPU, seed=1,
        )
        for _ in range(2)
    ]  # fmt: skip
    assert run[0] == run[1]
    assert torch.equal(state, torch.get_rng_state())


def test_context_comes_from_training_documents_only(tiny, domain) -> None:
    eos = tiny.tokenizer.eos_token_id
    train = [d.text for d in domain.train_docs]
    holdout = [d.text for d in domain.holdout_docs]
    for context in prompt_contexts(tiny.tokenizer, domain.train_docs, 6, 4, 128, seed=0):
        assert context.count(eos) == 4
        passages = tiny.tokenizer.decode(context).split("<eos>")[:-1]
        for passage in passages:
            assert any(t.startswith(passage) for t in train)
            assert not any(passage in h for h in holdout)


def test_bad_settings_are_clear_errors(tiny, domain) -> None:
    call = dict(
        model=tiny.model, tokenizer=tiny.tokenizer, holdout_blocks=domain.holdout_blocks,
        train_docs=domain.train_docs, batch_size=4, device=CPU,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="lower context_tokens to at most 208"):
        prompted_holdout_nll(**call, k=2, context_tokens=250)  # 256 positions
    with pytest.raises(ConfigError, match="no room"):
        prompted_holdout_nll(**call, k=4, context_tokens=6)
    with pytest.raises(DataError, match="lower k"):
        prompted_holdout_nll(**call, k=len(domain.train_docs) + 1, context_tokens=200)
    with pytest.raises(ConfigError, match="k must be"):
        prompted_holdout_nll(**call, k=-1, context_tokens=64)
