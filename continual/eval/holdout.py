"""Holdout evaluation: mean token negative log-likelihood over fixed blocks."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm


@torch.inference_mode()
def holdout_nll(
    model: torch.nn.Module,
    blocks: torch.Tensor,
    batch_size: int,
    device: torch.device,
    desc: str = "eval",
) -> tuple[float, int]:
    """Mean next-token cross-entropy (nats/token) over every predicted position of ``blocks``.

    Each block of length n contributes n - 1 predictions. Returns (mean NLL, token count).
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in tqdm(range(0, len(blocks), batch_size), desc=desc, leave=False, unit="batch"):
        ids = blocks[start : start + batch_size].to(device)
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        targets = ids[:, 1:]
        # -log softmax(logits)[target] = logsumexp(logits) - logits[target]: the same
        # cross-entropy without writing a (batch x length x vocab) log-prob tensor
        target_logits = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        total += float((torch.logsumexp(logits, dim=-1) - target_logits).sum())
        count += targets.numel()
    model.train(was_training)
    return total / count, count
