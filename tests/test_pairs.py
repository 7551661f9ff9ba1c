"""Pairs domains: response-only masking, rendering, answer scoring, training loss, and chains on
the tiny model (a pairs chain over the built-in tasks, and a text -> pairs chain)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from continual.data.documents import Example
from continual.data.pairs import IGNORE, EncodedPairs
from continual.data.render import Renderer
from continual.errors import ConfigError
from continual.eval.pairs import choice_logliks, normalise_answer, response_nll
from continual.models.loading import byte_tokenizer
from continual.recipe import run_experiment
from continual.train.loop import _accumulate, response_logits, stage_steps
from tests.conftest import TINY, compose_config, interrupted_then_resumed

CHATML = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
EXAMPLES = [Example("a", "2+2?", "4"), Example("b", "Capital of France?", "Paris")]


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, object]:
    from continual.models.loading import load_model

    cfg = compose_config([*TINY, "+sequence=med_code"])
    loaded = load_model(cfg.model, Path(cfg.cache_dir))
    return loaded.model, loaded.tokenizer


def _encoded(renderer: Renderer, examples: list[Example]) -> EncodedPairs:
    pairs = [renderer.encode(ex) for ex in examples]
    return EncodedPairs([p for p, _ in pairs], [r for _, r in pairs], pad_id=0)


def test_batch_masks_prompt_and_padding_token_by_token() -> None:
    tok = byte_tokenizer()
    renderer = Renderer(tok, template="plain")
    encoded = _encoded(renderer, EXAMPLES)
    batch = encoded.batch([0, 1])
    for row, ex in enumerate(EXAMPLES):
        prompt = tok(f"{ex.prompt}\nAnswer: ")["input_ids"]
        response = tok(ex.response + "<eos>", add_special_tokens=False)["input_ids"]
        n = len(prompt) + len(response)
        assert batch["input_ids"][row, :n].tolist() == prompt + response
        assert batch["labels"][row, : len(prompt)].tolist() == [IGNORE] * len(prompt)
        assert batch["labels"][row, len(prompt) : n].tolist() == response
        assert (batch["labels"][row, n:] == IGNORE).all()
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (
            batch["input_ids"].shape[1] - n
        )  # noqa: E501


def test_chat_template_rendering_with_demonstrations() -> None:
    tok = byte_tokenizer()
    tok.chat_template = CHATML
    renderer = Renderer(tok, template="auto", system_prompt="Be brief.")
    assert renderer.name == "chat"
    text = renderer.prompt_text("Q?", demos=[EXAMPLES[0]])
    assert text == (
        "<|system|>Be brief.<|end|><|user|>2+2?<|end|><|assistant|>4<|end|>"
        "<|user|>Q?<|end|><|assistant|>"
    )
    assert renderer.response_text("Paris") == "Paris<|end|>"
    # the training sequence is exactly the rendered conversation
    prompt, response = renderer.encode(EXAMPLES[1])
    assert tok.decode(prompt + response) == tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": EXAMPLES[1].prompt},
         {"role": "assistant", "content": "Paris"}], tokenize=False,
    )  # fmt: skip


def test_plain_template_and_its_errors() -> None:
    tok = byte_tokenizer()
    assert Renderer(tok).name == "plain"  # auto without a chat template
    renderer = Renderer(tok, plain_format="Q: {prompt}\nA: ")
    assert renderer.prompt_text("x", demos=[EXAMPLES[0]]) == "Q: 2+2?\nA: 4\n\nQ: x\nA: "
    assert renderer.response_text("4") == "4<eos>"
    with pytest.raises(ConfigError, match="has no chat template|asks for the chat template"):
        Renderer(tok, template="chat", domain="med")
    with pytest.raises(ConfigError, match="cannot be filled in"):
        Renderer(tok, plain_format="{prompt} {answer}")
    with pytest.raises(ConfigError, match="no '\\{prompt\\}' field"):
        Renderer(tok, plain_format="Answer: ")


@pytest.mark.parametrize(
    ("predicted", "gold", "same"),
    [
        ("  `parse_args`\n", "parse_args", True),
        ('"Paris."', "paris", True),
        ("METHODS\nbecause ...", "methods", True),
        ("open  file", "open file", True),
        ("\n\nread", "read", True),
        ("read_file", "read", False),
        ("ＡＢＣ", "abc", True),  # NFKC folds full-width letters
    ],
)
def test_exact_match_normalisation(predicted: str, gold: str, same: bool) -> None:
    assert (normalise_answer(predicted) == normalise_answer(gold)) is same


def _naive_loglik(model: torch.nn.Module, prompt: list[int], option: list[int]) -> float:
    ids = torch.tensor([prompt + option])
    logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    return float(sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(option)))


def test_choice_scoring_matches_full_sequences_and_picks_the_likelier_option(tiny) -> None:
    model, _ = tiny
    model.eval()
    prompts = [[5, 6, 7, 8, 9, 10, 11], [20, 21, 22], [30, 31, 32, 33, 34]]  # different lengths
    options = [[40], [41, 42, 43], [44, 45]]
    scores = choice_logliks(model, prompts, options, torch.device("cpu"), pad_id=0)
    with torch.no_grad():
        naive = torch.tensor([[_naive_loglik(model, p, o) for o in options] for p in prompts])
    torch.testing.assert_close(scores, naive, atol=1e-4, rtol=1e-4)
    assert scores.argmax(dim=1).tolist() == naive.argmax(dim=1).tolist()


def test_response_nll_counts_response_tokens_only(tiny) -> None:
    model, tok = tiny
    encoded = _encoded(Renderer(tok), EXAMPLES)
    nll, count = response_nll(model, encoded, batch_size=1, device=torch.device("cpu"))
    assert count == sum(len(r) for r in encoded.responses)
    with torch.no_grad():
        total = -sum(
            _naive_loglik(model, p, r)
            for p, r in zip(encoded.prompts, encoded.responses, strict=True)
        )
    assert nll == pytest.approx(total / count, rel=1e-5)


def test_training_loss_is_the_mean_over_response_tokens_for_any_micro_batch(tiny) -> None:
    model, tok = tiny
    encoded = _encoded(Renderer(tok), EXAMPLES * 2)
    batch = encoded.batch([0, 1, 2, 3])
    losses, grads = [], []
    model.lm_head.weight.requires_grad_(True)
    for micro in (4, 1):
        model.zero_grad()
        losses.append(_accumulate(model, batch, micro, torch.device("cpu")))
        grads.append(model.lm_head.weight.grad.clone())
    with torch.no_grad():
        expected = -sum(
            _naive_loglik(model, p, r)
            for p, r in zip(encoded.prompts, encoded.responses, strict=True)
        ) / sum(len(r) for r in encoded.responses)
    assert losses[0] == pytest.approx(expected, rel=1e-5)
    assert losses[1] == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-4)
    model.lm_head.weight.requires_grad_(False)
    model.zero_grad()


def test_output_head_on_response_positions_only_gives_the_full_logits_gradients(tiny) -> None:
    """response_logits runs the head on the scored positions only; loss and every gradient
    equal those of full logits (float tolerance)."""
    model, tok = tiny
    batch = _encoded(Renderer(tok), EXAMPLES * 2).batch([0, 1, 2, 3])
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    results = []
    for full in (True, False):
        model.zero_grad()
        if full:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            logits, targets = logits.logits[:, :-1], batch["labels"][:, 1:]
        else:
            logits, targets = response_logits(model, batch)
            assert logits.shape[1] < batch["input_ids"].shape[1] - 1  # prompt positions skipped
        loss = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE
        )
        loss.backward()
        results.append((float(loss), [p.grad.clone() for p in params]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    for full_grad, kept_grad in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(kept_grad, full_grad, atol=1e-6, rtol=1e-4)
    for p in params:
        p.requires_grad_(False)
    model.zero_grad()


def test_stage_steps_in_epochs() -> None:
    cfg = OmegaConf.create({"steps": 20, "epochs": None, "batch_size": 8, "warmup_steps": 2})
    assert stage_steps(cfg, 100) == 20
    cfg.epochs = 2
    assert stage_steps(cfg, 100) == 25  # ceil(2 * 100 / 8)
    cfg.epochs, cfg.warmup_steps = 0.5, 0
    assert stage_steps(cfg, 10) == 1
    cfg.warmup_steps = 5
    with pytest.raises(ConfigError, match="fewer than train.warmup_steps"):
        stage_steps(cfg, 10)


# The built-in tasks on the tiny model: a byte-level tokenizer needs a longer context.
PAIRS_TINY = [
    *TINY,
    "model.architecture.max_position_embeddings=1024",
    "train.epochs=1",
    "eval.prompted_k=1",
    *[f"domains.{d}.{k}" for d in ("med", "legal", "code")
      for k in ("train_examples=6", "holdout_examples=4", "max_tokens=480")],
    "domains.med.source.max_words=6", "domains.legal.source.max_words=6",
    "domains.code.source.max_chars=150", "domains.code.max_new_tokens=4",
]  # fmt: skip


def test_pairs_chain_on_builtin_tasks(tmp_path: Path) -> None:
    cfg = compose_config([*PAIRS_TINY, "+sequence=pairs_med_legal_code"])
    metrics = run_experiment(cfg, tmp_path / "run")
    acc = metrics[metrics.metric == "accuracy"].pivot_table(
        index="stage", columns="eval_domain", values="value"
    )
    assert list(acc.index) == [0, 1, 2, 3] and set(acc.columns) == {"med", "legal", "code"}
    assert ((acc >= 0) & (acc <= 1)).all().all()
    names = set(metrics.metric)
    assert {"holdout_nll", "rougeL", "prompted_accuracy", "prompted_nll"} <= names
    assert {"acc_bwt", "acc_avg_forgetting_pts", "final_avg_accuracy"} <= names
    rouge = metrics[metrics.metric == "rougeL"]
    assert set(rouge.eval_domain) == {"code"}  # generated answers only
    log = pd.read_csv(tmp_path / "run" / "train_log.csv")
    # one epoch over 6 examples in batches of 4: 2 steps per stage, global steps 1..6
    assert log.groupby("stage").size().tolist() == [2, 2, 2]
    assert log.global_step.tolist() == list(range(1, 7)) and set(log.epoch) == {1}
    info = (tmp_path / "run" / "run_info.json").read_text()
    assert '"template": "plain"' in info and '"train_examples": 6' in info


def test_text_then_pairs_chain(tmp_path: Path) -> None:
    cfg = compose_config([
        *TINY, "model.architecture.max_position_embeddings=1024", "train.epochs=1",
        "train.max_train_blocks=8",  # one epoch over all med blocks would take minutes
        "eval.prompted_k=1", "+sequence=med_code", "domain@domains.code=code_names",
        "domains.code.train_examples=6", "domains.code.holdout_examples=4",
        "domains.code.max_tokens=480", "domains.code.source.max_chars=150",
        "domains.code.max_new_tokens=4",
    ])  # fmt: skip
    metrics = run_experiment(cfg, tmp_path / "run")
    by_domain = metrics[metrics.stage == 2].groupby("eval_domain").metric.apply(set)
    assert "accuracy" in by_domain["code"] and "accuracy" not in by_domain["med"]
    assert "holdout_nll" in by_domain["med"] and "holdout_nll" in by_domain["code"]
    summary = set(metrics[metrics.stage == 2].metric)
    assert "final_avg_accuracy" in summary and "avg_forgetting_pct" in summary
    # accuracy forgetting needs a pairs domain trained before the last stage: none here
    assert "acc_avg_forgetting_pts" in summary
    assert metrics[metrics.metric == "acc_avg_forgetting_pts"].value.isna().all()


def test_interrupted_pairs_chain_resumes_to_the_same_result(tmp_path: Path, monkeypatch) -> None:

    cfg = compose_config([*PAIRS_TINY, "+sequence=pairs_med_legal_code", "eval.prompted_k=0"])
    full = run_experiment(cfg, tmp_path / "full")
    resumed = interrupted_then_resumed(cfg, tmp_path / "cut", monkeypatch)

    def comparable(m: pd.DataFrame) -> pd.DataFrame:
        kept = m[m.metric != "stage_seconds"].drop(columns="run")
        return kept.sort_values(["stage", "eval_domain", "metric"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(comparable(full), comparable(resumed))


def test_greedy_decoding_from_the_cache_equals_transformers_generate(tiny) -> None:
    from transformers import GenerationConfig

    from continual.eval.pairs import _left_padded, greedy_continue, run_prompts

    model, _ = tiny
    model.eval()
    prompts = [[5, 6, 7, 8, 9, 10, 11], [20, 21, 22], [30, 31, 32, 33, 34]]
    cpu = torch.device("cpu")
    ours = greedy_continue(model, run_prompts(model, prompts, cpu, 0), [256], 6, cpu)
    ids, mask = _left_padded(prompts, 0)
    config = GenerationConfig(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=256)
    with torch.no_grad():
        theirs = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    for row, generated in enumerate(ours):
        assert theirs[row, ids.shape[1] :].tolist()[: len(generated)] == generated


def test_gold_nll_from_the_cache_equals_teacher_forcing(tiny) -> None:
    from continual.eval.pairs import continuation_logliks, run_prompts

    model, _ = tiny
    model.eval()
    prompts = [[5, 6, 7, 8, 9, 10, 11], [20, 21, 22], [30, 31, 32, 33, 34]]
    golds = [[40, 41, 42, 43], [44], [45, 46]]  # different lengths
    cpu = torch.device("cpu")
    scores = continuation_logliks(model, run_prompts(model, prompts, cpu, 0), golds, cpu)
    with torch.no_grad():
        naive = torch.tensor(
            [_naive_loglik(model, p, g) for p, g in zip(prompts, golds, strict=True)]
        )
    torch.testing.assert_close(scores, naive, atol=1e-4, rtol=1e-4)


def test_a_reloaded_pairs_run_reproduces_its_accuracy_and_loss(tmp_path: Path) -> None:
    from continual.serve import load_run

    cfg = compose_config([*PAIRS_TINY, "+sequence=pairs_med_legal_code", "eval.prompted_k=0"])
    metrics = run_experiment(cfg, tmp_path / "run")
    final = metrics[metrics.stage == 3].set_index(["eval_domain", "metric"]).value
    run = load_run(tmp_path / "run")
    for domain in ("med", "code"):
        values = run.evaluate(domain)
        assert values["accuracy"] == final[(domain, "accuracy")]
        assert values["holdout_nll"] == pytest.approx(final[(domain, "holdout_nll")], abs=1e-6)
    assert run.evaluate("code")["rougeL"] == pytest.approx(final[("code", "rougeL")])
