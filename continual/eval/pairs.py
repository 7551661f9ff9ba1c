"""Evaluation of a ``pairs`` domain: response-only NLL, task accuracy, ROUGE-L.

Definitions (per domain, over its holdout examples):

* ``holdout_nll``: mean negative log-likelihood (nats) per response token, the response being
  the answer plus its end-of-turn marker, given the rendered prompt; prompt tokens are not
  scored. Summed over all response tokens of the holdout, divided by their count.
* ``accuracy`` (fraction in [0, 1]):
  - ``answer: choice``: the example is right when its gold answer has the highest
    log-likelihood (sum over the answer's tokens plus the end-of-turn marker) among its choices;
  - ``answer: generate``: greedy generation (at most ``max_new_tokens``) is right when it equals
    the gold answer after :func:`normalise_answer`.
* ``rougeL`` (``generate`` with ``rouge: true``): mean ROUGE-L F1 between the generated and the
  gold answer (``rouge-score``'s tokenizer: lower-cased alphanumeric words).

The prompted baseline scores the same holdout with ``k`` training examples as solved
demonstrations in front of every prompt (``prompted_nll``, ``prompted_accuracy``).
"""

from __future__ import annotations

import copy
import inspect
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from continual.data.pairs import EncodedPairs, PairsDomain


def normalise_answer(text: str) -> str:
    """The answer as compared for exact match: NFKC, first non-empty line only, surrounding
    whitespace, quotes and backticks and a trailing full stop removed, runs of whitespace
    collapsed to one space, case-folded."""
    text = unicodedata.normalize("NFKC", text)
    lines = [line for line in text.splitlines() if line.strip()]
    text = lines[0] if lines else ""
    text = text.strip().strip("`'\"").strip().rstrip(".").strip()
    return " ".join(text.split()).casefold()


@torch.inference_mode()
def response_nll(
    model: torch.nn.Module, encoded: EncodedPairs, batch_size: int, device: torch.device,
    desc: str = "nll",
) -> tuple[float, int]:  # fmt: skip
    """Mean NLL per response token over all examples, and the number of response tokens."""
    from continual.data.pairs import IGNORE

    total, count = 0.0, 0
    for start in tqdm(range(0, len(encoded), batch_size), desc=desc, leave=False, unit="batch"):
        batch = encoded.batch(range(start, min(start + batch_size, len(encoded))))
        logits = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            use_cache=False,
        ).logits[:, :-1]
        labels = batch["labels"][:, 1:].to(device)
        total += float(
            torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE,
                reduction="sum",
            )
        )  # fmt: skip
        count += int((labels != IGNORE).sum())
    return total / count, count


def _left_padded(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, ...]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p) :] = torch.tensor(list(p))
        mask[r, width - len(p) :] = 1
    return ids, mask


@dataclass
class PromptState:
    """A left-padded batch of prompts after one forward pass: the KV cache, the log-probs of
    the next token, the attention mask and each prompt's length (its next position)."""

    cache: Any
    next_logp: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor


@torch.inference_mode()
def run_prompts(
    model: Any, prompts: Sequence[Sequence[int]], device: torch.device, pad_id: int
) -> PromptState:
    """Run ``prompts`` once (left-padded, explicit position ids) and keep the cache."""
    ids, mask = _left_padded(prompts, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    next_logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    return PromptState(out.past_key_values, next_logp, mask, mask.sum(-1, keepdim=True))


@torch.inference_mode()
def continuation_logliks(
    model: Any, state: PromptState, continuations: Sequence[Sequence[int]], device: torch.device
) -> torch.Tensor:
    """``log p(continuation_i | prompt_i)`` summed over each continuation's tokens (one per
    prompt, any lengths), from a copy of the prompts' cache."""
    n, width = len(continuations), max(len(c) for c in continuations)
    first = torch.tensor([c[0] for c in continuations], device=device)
    score = state.next_logp[torch.arange(n, device=device), first].clone()
    if width == 1:
        return score.cpu()
    feed = torch.zeros((n, width - 1), dtype=torch.long)
    targets = torch.zeros((n, width - 1), dtype=torch.long)
    valid = torch.zeros((n, width - 1), dtype=torch.bool)
    for i, c in enumerate(continuations):
        feed[i, : len(c) - 1] = torch.tensor(list(c[:-1]), dtype=torch.long)
        targets[i, : len(c) - 1] = torch.tensor(list(c[1:]), dtype=torch.long)
        valid[i, : len(c) - 1] = True
    feed, targets, valid = feed.to(device), targets.to(device), valid.to(device)
    step = model(
        input_ids=feed,
        attention_mask=torch.cat([state.mask, valid.long()], dim=-1),
        position_ids=state.lengths + torch.arange(width - 1, device=device),
        use_cache=True,
        **{_cache_argument(model): copy.deepcopy(state.cache)},
    )
    logp = torch.log_softmax(step.logits.float(), dim=-1)
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (score + (picked * valid).sum(-1)).cpu()


@torch.inference_mode()
def choice_logliks(
    model: Any, prompts: Sequence[Sequence[int]], options: Sequence[Sequence[int]],
    device: torch.device, pad_id: int,
) -> torch.Tensor:  # fmt: skip
    """``[n_prompts, n_options]`` log-likelihoods: ``log p(option | prompt)`` summed over the
    option's tokens. The prompts run once; each option continues from a copy of the cache."""
    state = run_prompts(model, prompts, device, pad_id)
    columns = [continuation_logliks(model, state, [o] * len(prompts), device) for o in options]
    return torch.stack(columns, dim=1)


@torch.inference_mode()
def greedy_continue(
    model: Any, state: PromptState, stop_ids: Sequence[int], max_new_tokens: int,
    device: torch.device,
) -> list[list[int]]:  # fmt: skip
    """Greedy decoding from the prompts' cache (consumed): per prompt, the generated ids up to
    and including the first stop id, at most ``max_new_tokens``."""
    n = state.next_logp.shape[0]
    token = state.next_logp.argmax(-1)
    cache, mask, position = state.cache, state.mask, state.lengths
    out: list[list[int]] = [[] for _ in range(n)]
    done = [False] * n
    for step in range(max_new_tokens):
        for i, t in enumerate(token.tolist()):
            if not done[i]:
                out[i].append(t)
                done[i] = t in stop_ids
        if all(done) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=device)], dim=-1)
        result = model(
            input_ids=token[:, None], attention_mask=mask, position_ids=position,
            use_cache=True, **{_cache_argument(model): cache},
        )  # fmt: skip
        cache, position = result.past_key_values, position + 1
        token = result.logits[:, -1].argmax(-1)
    return out


def _cache_argument(model: Any) -> str:
    """The forward argument that takes a KV cache: ``cache`` in newer transformers releases,
    ``past_key_values`` before."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def evaluate_pairs(
    model: Any, domain: PairsDomain, batch_size: int, device: torch.device, k: int = 0,
    desc: str = "eval",
) -> dict[str, float]:  # fmt: skip
    """``holdout_nll``, ``accuracy`` and (when enabled) ``rougeL`` of ``domain``'s holdout
    under ``model`` as it is now; with ``k > 0`` the first ``k`` training examples are shown as
    demonstrations before every prompt (the prompted baseline)."""
    from continual.data.pairs import EncodedPairs

    was_training = model.training
    model.eval()
    renderer, holdout = domain.renderer, domain.holdout
    demos = domain.train[:k]
    encoded = domain.holdout_encoded
    if demos:
        prompts = [renderer.encode_prompt(ex.prompt, demos) for ex in holdout]
        encoded = EncodedPairs(prompts, encoded.responses, encoded.pad_id)
    values: dict[str, float] = {}
    if domain.answer == "choice":
        right, nll, count = _choice_scores(model, domain, encoded, batch_size, device, desc)
        values["holdout_nll"] = nll / count
    else:
        predictions, nll, count = _generate(model, domain, encoded, batch_size, device, desc)
        values["holdout_nll"] = nll / count
        golds = [ex.response for ex in holdout]
        right = [
            normalise_answer(p) == normalise_answer(g)
            for p, g in zip(predictions, golds, strict=True)
        ]
        if domain.rouge:
            values["rougeL"] = rouge_l(predictions, golds)
    values["accuracy"] = sum(right) / len(right)
    model.train(was_training)
    return values


def _generate(
    model: Any, domain: PairsDomain, encoded: EncodedPairs, batch_size: int,
    device: torch.device, desc: str,
) -> tuple[list[str], float, int]:  # fmt: skip
    """Greedy answers (decoded without special tokens) and the gold answers' summed NLL and
    token count, from one prompt pass per batch."""
    tokenizer, stop_ids = domain.renderer.tokenizer, domain.renderer.stop_ids()
    predictions: list[str] = []
    nll, count = 0.0, 0
    for start in tqdm(range(0, len(encoded), batch_size), desc=f"{desc} gen", leave=False):
        rows = range(start, min(start + batch_size, len(encoded)))
        state = run_prompts(model, [encoded.prompts[i] for i in rows], device, encoded.pad_id)
        golds = [encoded.responses[i] for i in rows]
        nll -= float(continuation_logliks(model, state, golds, device).sum())
        count += sum(len(g) for g in golds)
        generated = greedy_continue(model, state, stop_ids, domain.max_new_tokens, device)
        predictions += tokenizer.batch_decode(generated, skip_special_tokens=True)
    return predictions, nll, count


def _choice_scores(
    model: Any, domain: PairsDomain, encoded: EncodedPairs, batch_size: int,
    device: torch.device, desc: str,
) -> tuple[list[bool], float, int]:  # fmt: skip
    """Per example whether the gold choice scores highest; the gold answers' summed NLL and
    token count (the response-only NLL, as the gold answer is one of the choices)."""
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, ex in enumerate(domain.holdout):
        groups[tuple(ex.choices or ())].append(i)
    right = [False] * len(domain.holdout)
    nll, count = 0.0, 0
    bar = tqdm(total=len(domain.holdout), desc=f"{desc} choices", leave=False, unit="example")
    for choices, members in groups.items():
        options = [domain.renderer.encode_response(c) for c in choices]
        for start in range(0, len(members), batch_size):
            rows = members[start : start + batch_size]
            scores = choice_logliks(
                model, [encoded.prompts[i] for i in rows], options, device, encoded.pad_id
            )
            for r, i in enumerate(rows):
                gold = choices.index(domain.holdout[i].response)
                right[i] = int(scores[r].argmax()) == gold
                nll -= float(scores[r, gold])
                count += len(options[gold])
            bar.update(len(rows))
    bar.close()
    return right, nll, count


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 (``rouge-score``) of predictions against references."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    scores = [
        scorer.score(ref, pred)["rougeL"].fmeasure
        for pred, ref in zip(predictions, references, strict=True)
    ]
    return sum(scores) / len(scores)
