"""Seeds derived per (run seed, stage), so that a resumed run replays a stage exactly."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def stage_seed(seed: int, stage: int) -> int:
    """A 31-bit seed for one stage of one run, independent of what ran before it."""
    digest = hashlib.sha256(f"continual:{seed}:{stage}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
