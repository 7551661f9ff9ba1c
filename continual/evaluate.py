"""Holdout evaluation: mean token negative log-likelihood over fixed blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
        logits = model(input_ids=ids).logits[:, :-1].float()
        targets = ids[:, 1:]
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="sum"
        )
        total += float(loss)
        count += targets.numel()
    model.train(was_training)
    return total / count, count
