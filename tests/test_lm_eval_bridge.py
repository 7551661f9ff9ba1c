"""lm-eval bridge: task files, in-memory evaluation, and unit agreement with our holdout loss."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from continual.data.documents import Document
from continual.data.domain import DomainData
from continual.errors import ConfigError, DataError
from continual.eval.holdout import holdout_nll
from continual.eval.lm_eval_bridge import evaluate_tasks, nll_to_bits_per_byte, write_holdout_tasks
from continual.models.loading import load_model
from tests.conftest import CONF, prose_texts

L = 64  # bytes (= tokens with the byte tokenizer) per holdout block
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory):
    """tiny_random, briefly trained on toy text so that its predictions are far from uniform
    (a uniform model would hide unit and off-by-one mistakes), and a toy domain whose holdout
    documents are exactly its holdout blocks (ASCII, L bytes each)."""
    cfg = OmegaConf.load(Path(CONF) / "model" / "tiny_random.yaml")
    cfg.device = "cpu"
    loaded = load_model(cfg, tmp_path_factory.mktemp("cache"))
    model, tok = loaded.model, loaded.tokenizer
    texts = prose_texts(40)
    docs = [Document(str(i), t[:L]) for i, t in enumerate(texts[:10])]
    blocks = torch.tensor([tok(d.text, add_special_tokens=False)["input_ids"] for d in docs])
    assert blocks.shape == (10, L)
    train = [tok(t[L : 2 * L], add_special_tokens=False)["input_ids"] for t in texts[10:26]]
    train = torch.tensor(train)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model.requires_grad_(True)
        opt = torch.optim.Adam(model.parameters(), lr=3e-2)
        for _ in range(8):  # loss 5.5 -> ~3 nats/byte
            loss = model(input_ids=train, labels=train).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    model.requires_grad_(False)
    model.eval()
    data = DomainData("toy", [], docs, torch.empty(0, L, dtype=torch.long), blocks)
    return model, tok, data


def test_holdout_loss_and_lm_eval_bits_per_byte_agree(toy, tmp_path: Path) -> None:
    model, tok, data = toy
    names = write_holdout_tasks({"toy": data}, tmp_path, unit="blocks", tokenizer=tok)
    rng_before = (random.getstate(), torch.get_rng_state())
    result = evaluate_tasks(model, tok, names, tmp_path, batch_size=4)["continual_toy"]
    assert random.getstate() == rng_before[0]  # lm-eval did not re-seed the global RNGs
    assert torch.equal(torch.get_rng_state(), rng_before[1])

    n_bytes = sum(len(d.text.encode("utf-8")) for d in data.holdout_docs)
    # lm-eval predicts every token of a document, the first from a prefix token (BOS, else
    # EOS); score our blocks the same way: prepend that token, and every block token counts.
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    blocks = data.holdout_blocks
    prefixed = torch.cat([torch.full((len(blocks), 1), prefix), blocks], dim=1)
    mean, n_tokens = holdout_nll(model, prefixed, 4, CPU)
    assert n_tokens == blocks.numel() == n_bytes  # byte tokenizer: tokens == bytes
    ours = nll_to_bits_per_byte(mean, n_tokens, n_bytes)
    theirs = result["bits_per_byte"]
    assert ours == pytest.approx(theirs, rel=1e-4)
    assert result["byte_perplexity"] == pytest.approx(2**theirs, rel=1e-6)

    # The plain metric (no prefix; the first token of each block is not scored) converted
    # with its own token count is close, but off by more than the tolerance: the test can
    # tell the conventions apart.
    plain, n_plain = holdout_nll(model, blocks, 4, CPU)
    converted = nll_to_bits_per_byte(plain, n_plain, n_bytes - len(blocks))
    print(
        f"\nbits/byte: ours {ours:.8f}, lm-eval {theirs:.8f} (rel. diff "
        f"{abs(ours - theirs) / theirs:.1e}); plain metric converted {converted:.6f}"
    )
    assert abs(converted - theirs) / theirs > 1e-3
    assert mean / math.log(2) == pytest.approx(theirs, rel=1e-4)  # 1 token = 1 byte


def test_task_files(toy, tmp_path: Path) -> None:
    _, tok, data = toy
    # A holdout block spanning two packed documents holds the EOS separator.
    eos_block = torch.cat([data.holdout_blocks[0, :10], torch.tensor([tok.eos_token_id])])
    blocks = torch.stack([eos_block, data.holdout_blocks[1, :11]])
    both = {"toy": data, "sep": DomainData("sep", [], data.holdout_docs[:2], blocks, blocks)}
    names = write_holdout_tasks(both, tmp_path / "docs", prefix="ours")
    assert names == ["ours_toy", "ours_sep"]
    config = yaml.safe_load((tmp_path / "docs" / "ours_toy.yaml").read_text())
    assert config["task"] == "ours_toy"
    assert config["output_type"] == "loglikelihood_rolling"
    assert config["dataset_path"] == "json" and config["test_split"] == "test"
    path = Path(config["dataset_kwargs"]["data_files"]["test"])
    assert path.is_absolute() and path.is_file()
    assert [m["metric"] for m in config["metric_list"]] == [
        "word_perplexity",
        "byte_perplexity",
        "bits_per_byte",
    ]
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["text"] for r in rows] == [d.text for d in data.holdout_docs]

    write_holdout_tasks(both, tmp_path / "blocks", prefix="ours", unit="blocks", tokenizer=tok)
    lines = (tmp_path / "blocks" / "ours_sep.jsonl").read_text().splitlines()
    texts = [json.loads(line)["text"] for line in lines]
    assert texts[0].endswith("<eos>")  # literal, so that it re-tokenizes to the same id
    for text, block in zip(texts, blocks, strict=True):
        assert tok(text, add_special_tokens=False)["input_ids"] == block.tolist()
    with pytest.raises(ConfigError, match="tokenizer"):
        write_holdout_tasks(both, tmp_path / "x", unit="blocks")
    with pytest.raises(ConfigError, match="unit"):
        write_holdout_tasks(both, tmp_path / "x", unit="tokens")


def test_unknown_task_is_a_config_error(toy, tmp_path: Path) -> None:
    model, tok, data = toy
    write_holdout_tasks({"toy": data}, tmp_path)
    with pytest.raises(ConfigError, match="lm-eval ls tasks") as info:
        evaluate_tasks(model, tok, ["continual_tyo"], tmp_path, batch_size=2)
    assert "continual_toy" in str(info.value)  # the close match


def test_missing_dataset_fails_before_the_model_runs(toy, tmp_path: Path) -> None:
    model, tok, data = toy
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        hub = {
            "task": "needs_hub", "dataset_path": "continual-tests/no-such-dataset",
            "output_type": "loglikelihood_rolling", "test_split": "test",
            "doc_to_text": "", "doc_to_target": "text",
            "metric_list": [{"metric": "bits_per_byte"}],
        }  # fmt: skip
        (tmp_path / "needs_hub.yaml").write_text(yaml.safe_dump(hub))
        with pytest.raises(DataError, match="needs_hub") as info:
            evaluate_tasks(model, tok, ["needs_hub"], tmp_path, batch_size=2, offline=True)
        assert "no-such-dataset" in str(info.value) and "internet" in str(info.value)

        [name] = write_holdout_tasks({"toy": data}, tmp_path)
        (tmp_path / f"{name}.jsonl").unlink()
        with pytest.raises(DataError, match="write_holdout_tasks"):
            evaluate_tasks(model, tok, [name], tmp_path, batch_size=2)
    finally:
        hook.remove()
    assert not calls


def test_offline_switch_is_set_for_the_call_and_restored(monkeypatch) -> None:
    import huggingface_hub.constants as hub

    from continual.eval.lm_eval_bridge import _hf_offline

    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    before = hub.HF_HUB_OFFLINE
    with _hf_offline(None):  # unset: offline (no hub is assumed at run time)
        assert os.environ["HF_HUB_OFFLINE"] == "1" and hub.HF_HUB_OFFLINE is True
    assert "HF_HUB_OFFLINE" not in os.environ and hub.HF_HUB_OFFLINE is before
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with _hf_offline(None):  # the user's choice is kept
        assert os.environ["HF_HUB_OFFLINE"] == "0"
    assert nll_to_bits_per_byte(math.log(2), 3, 3) == pytest.approx(1.0)
