"""Adapters beside LoRA: CRMA, the constrained residual mixing adapter."""

from continual.adapters.crma import (
    CRMA,
    CRMABlockAdapter,
    CRMAConfig,
    find_decoder_layers,
    load_crma,
    save_crma,
    sinkhorn,
)

__all__ = [
    "CRMA",
    "CRMABlockAdapter",
    "CRMAConfig",
    "find_decoder_layers",
    "load_crma",
    "save_crma",
    "sinkhorn",
]
