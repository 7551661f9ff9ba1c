"""CRMA: Constrained Residual Mixing Adapter (our reconstruction; the vendor published no code).

One small adapter per decoder block, applied to the block's output hidden state h (d wide)::

    h' = h + g * W_write( M( W_read h ) ),   g = exp(_log_alpha),   M = sinkhorn(log_mix, tau)

``read`` (n*r x d) maps h to n streams of width r (rank-r stream projections), M (n x n) mixes
the streams, ``write`` (d x n*r) maps them back; ``log_mix`` holds the mixing logits. Only M is
constrained: it is doubly stochastic (entries >= 0, rows and columns sum to 1), hence a convex
combination of permutation matrices (Birkhoff), and by convexity of the norm ||M||_2 <= 1 (= 1,
as M @ 1 = 1): the mixing step cannot amplify the stream signal, by structure, not by a penalty.
Nothing bounds ``read``, ``write`` or the gate g; LoRA factors and the frozen base are untouched.

Near-identity start: ``write`` is zero (like LoRA's B), so the model is exactly unchanged at step
0; ``write`` gets gradient at once (``read`` is random), ``read``/``log_mix``/``_log_alpha`` from
the second step. The adapter adds a residual term, so it cannot shrink h (the vendor's reported
bug: a mis-initialised read projection shrank hidden states to 33% over 32 layers).

The CRMA module lives beside the model (forward hooks on the decoder layers), not inside it, so
peft / Hugging Face saving is unaffected; use :func:`save_crma` / :func:`load_crma`.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from continual.errors import ConfigError, ModelError

CONFIG_NAME = "crma_config.json"
WEIGHTS_NAME = "crma.safetensors"


def sinkhorn(
    logits: Tensor, iterations: int = 20, temperature: float = 0.05, *, exact: bool = True
) -> Tensor:
    """Doubly stochastic matrix from ``logits`` (..., n, n): log-space Sinkhorn-Knopp.

    Alternately subtracts the logsumexp over rows and over columns of ``logits / temperature``
    (in float64), then, if ``exact``, rounds onto the Birkhoff polytope (Altschuler, Weed &
    Rigollet 2017, Alg. 2: scale down rows, then columns, whose sum exceeds 1, then add the
    rank-one correction err_r err_c^T / |err_r|_1). The rounding keeps entries >= 0 and makes
    row and column sums 1 to float precision whatever the logits; it is needed because with
    tau = 0.05 and logits pushed far by training, plain Sinkhorn can need thousands of iterations
    (near-permutation matrices converge like 1/k). When Sinkhorn has converged it changes M by at
    most 2 * (its marginal error, L1). Differentiable; returns ``logits.dtype``.
    """
    z = logits.to(torch.float64) / temperature
    for _ in range(iterations):
        z = z - torch.logsumexp(z, dim=-1, keepdim=True)
        z = z - torch.logsumexp(z, dim=-2, keepdim=True)
    m = z.exp()
    if exact:
        m = m / m.sum(-1, keepdim=True).clamp_min(1.0)  # rows <= 1 (min(1/s, 1) = 1/max(s, 1))
        m = m / m.sum(-2, keepdim=True).clamp_min(1.0)  # columns <= 1
        err_r = (1.0 - m.sum(-1, keepdim=True)).clamp_min(0.0)  # (..., n, 1)
        err_c = (1.0 - m.sum(-2, keepdim=True)).clamp_min(0.0)  # (..., 1, n)
        m = m + err_r * err_c / err_r.sum(-2, keepdim=True).clamp_min(1e-12)
    return m.to(logits.dtype)


@dataclass
class CRMAConfig:
    """Hyper-parameters of CRMA. Only "rank 4" and the Sinkhorn recipe of mHC are public; the
    rest are our choices (write them into results).

    n_streams: 4 streams mixed by the n x n matrix M (not published; mHC uses 4).
    rank: 4, width of each stream ("rank-4 stream projections"); read is d -> n_streams * rank.
    sinkhorn_iterations: 20 (mHC); the exact rounding in :func:`sinkhorn` guarantees the sums.
    temperature: 0.05 (public re-implementations of mHC); M = sinkhorn(log_mix / temperature).
    init_offdiag_logit: -8.0, the *tempered* off-diagonal logit (diagonal 0): log_mix starts at
        temperature * (0 | -8), so M starts at the identity up to e^-8 ~ 3e-4 per entry. Storing
        the raw -8 (tempered -160) would make M exactly I in float and give log_mix no gradient.
    init_log_alpha: 0.0: gate g = exp(_log_alpha) starts at 1, in log space so it stays > 0
        and Adam moves it by a relative amount per step. The model is unchanged at step 0
        anyway, because ``write`` starts at zero. Chosen by results/crma_gate_pilot: with the
        earlier log(0.01) the branch was inert (bypass effect <= 0.005 nats).
    placement: "block_output", the only one: a forward hook on each decoder layer's output.
    adapter_lr: lr of read/write; None = the ``base_lr`` given to ``parameter_groups``.
    mix_lr: 1e-3 for log_mix (moves the tempered logits by ~0.02 per Adam step).
    gate_lr: 1e-2 for _log_alpha (changes g by ~1% per Adam step).
    layers: indices of the decoder layers to adapt; None = all.
    """

    n_streams: int = 4
    rank: int = 4
    sinkhorn_iterations: int = 20
    temperature: float = 0.05
    init_offdiag_logit: float = -8.0
    init_log_alpha: float = 0.0
    placement: str = "block_output"
    adapter_lr: float | None = None
    mix_lr: float = 1e-3
    gate_lr: float = 1e-2
    layers: list[int] | None = None

    def __post_init__(self) -> None:
        if self.n_streams < 1 or self.rank < 1 or self.sinkhorn_iterations < 0:
            raise ConfigError("crma: n_streams and rank must be >= 1, sinkhorn_iterations >= 0")
        if self.temperature <= 0:
            raise ConfigError(f"crma: temperature must be > 0, got {self.temperature}")
        if self.placement != "block_output":
            raise ConfigError(f"crma: unknown placement {self.placement!r}; use 'block_output'")
        if self.layers is not None:
            self.layers = [int(i) for i in self.layers]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CRMAConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"crma: unknown config keys {sorted(unknown)}")
        return cls(**data)


class CRMABlockAdapter(nn.Module):
    """CRMA for one decoder block of hidden size d (see the module docstring for the equation).

    Parameters: ``read`` (n*r, d), ``write`` (d, n*r), ``log_mix`` (n, n), ``_log_alpha`` ().
    """

    def __init__(self, hidden_size: int, config: CRMAConfig) -> None:
        super().__init__()
        self.config = config
        n, width = config.n_streams, config.n_streams * config.rank
        self.read = nn.Parameter(torch.empty(width, hidden_size))
        nn.init.kaiming_uniform_(self.read, a=math.sqrt(5))  # as LoRA's A: U(+-1/sqrt(d))
        self.write = nn.Parameter(torch.zeros(hidden_size, width))
        offdiag = torch.full((n, n), config.init_offdiag_logit).fill_diagonal_(0.0)
        self.log_mix = nn.Parameter(offdiag * config.temperature)
        self._log_alpha = nn.Parameter(torch.tensor(float(config.init_log_alpha)))
        self.probe: list[Tensor] | None = None  # per-token residual ratios, while probing

    def mixing_matrix(self) -> Tensor:
        """The doubly stochastic n x n matrix M."""
        c = self.config
        return sinkhorn(self.log_mix, c.sinkhorn_iterations, c.temperature)

    def forward(self, h: Tensor) -> Tensor:
        """h + g * write(M(read h)), computed in the adapter dtype, added in h's dtype."""
        x = h.to(self.read.dtype)
        streams = (x @ self.read.T).unflatten(-1, (self.config.n_streams, self.config.rank))
        mixed = torch.einsum("ij,...jr->...ir", self.mixing_matrix(), streams).flatten(-2)
        residual = self._log_alpha.exp() * (mixed @ self.write.T)
        if self.probe is not None:  # ||g W_write M W_read h|| / ||h|| per token
            ratio = residual.detach().norm(dim=-1) / x.detach().norm(dim=-1).clamp_min(1e-12)
            self.probe.append(ratio.float().cpu())
        return h + residual.to(h.dtype)

    @torch.no_grad()
    def constraint_report(self) -> dict[str, float]:
        """Max |row sum - 1|, max |column sum - 1|, min entry and spectral norm of M; gate g."""
        m = self.mixing_matrix().double()
        return {
            "max_row_err": (m.sum(-1) - 1).abs().max().item(),
            "max_col_err": (m.sum(-2) - 1).abs().max().item(),
            "min_entry": m.min().item(),
            "spectral_norm": torch.linalg.matrix_norm(m, ord=2).item(),
            "gate": self._log_alpha.exp().item(),
        }


def find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder-layer ModuleList of a (peft-wrapped) causal LM, e.g. ``model.model.layers``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else base
    layers = getattr(decoder, "layers", None)
    if isinstance(layers, nn.ModuleList) and len(layers) > 0:
        return layers
    lists = [m for m in base.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    lists = [m for m in lists if len({type(b) for b in m}) == 1]  # homogeneous: blocks
    if not lists:
        raise ModelError(f"crma: no decoder layers found in {type(base).__name__}")
    return max(lists, key=len)


def _hidden_size(model: nn.Module) -> int:
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    if getattr(cfg, "hidden_size", None) is None:
        raise ModelError(f"crma: cannot read hidden_size from {type(model).__name__}.config")
    return int(cfg.hidden_size)


class CRMA(nn.Module):
    """CRMA adapters for the selected decoder layers, attached by forward hooks.

    Build with :meth:`from_model` (sizes and devices from the model) and call :meth:`attach`
    before creating the optimizer; the module is kept beside the model, not registered in it.
    """

    def __init__(self, config: CRMAConfig, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.config, self.hidden_size, self.num_layers = config, hidden_size, num_layers
        self.layer_indices = list(range(num_layers)) if config.layers is None else config.layers
        if any(not 0 <= i < num_layers for i in self.layer_indices):
            raise ConfigError(f"crma: layers {config.layers} outside 0..{num_layers - 1}")
        self.blocks = nn.ModuleList(
            CRMABlockAdapter(hidden_size, config) for _ in self.layer_indices
        )
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._enabled = True

    @classmethod
    def from_model(cls, model: nn.Module, config: CRMAConfig | None = None) -> CRMA:
        """A fresh CRMA sized for ``model`` (not yet attached)."""
        return cls(config or CRMAConfig(), _hidden_size(model), len(find_decoder_layers(model)))

    def attach(self, model: nn.Module) -> None:
        """Hook every selected decoder layer; each adapter moves to its layer's device."""
        layers, hidden = find_decoder_layers(model), _hidden_size(model)
        if hidden != self.hidden_size or len(layers) != self.num_layers:
            raise ModelError(
                f"crma: adapter is for hidden size {self.hidden_size} x {self.num_layers} layers,"
                f" the model has hidden size {hidden} x {len(layers)} layers"
            )
        self.detach()
        for block, i in zip(self.blocks, self.layer_indices, strict=True):
            param = next(layers[i].parameters(), None)
            if param is not None:
                block.to(param.device)
            # prepend: run before transformers' output-capturing hooks, so that
            # output_hidden_states reports the block outputs with CRMA applied
            hook = layers[i].register_forward_hook(self._hook(block), prepend=True)
            self._handles.append(hook)

    def _hook(self, block: CRMABlockAdapter) -> Callable[..., Any]:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            if not self._enabled:
                return output
            if isinstance(output, Tensor):
                return block(output)
            if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
                return type(output)([block(output[0]), *output[1:]])
            raise ModelError(f"crma: unexpected decoder layer output {type(output).__name__}")

        return hook

    def detach(self) -> None:
        """Remove the hooks: the model computes exactly as without CRMA."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Temporarily bypass the adapters (hooks stay registered)."""
        previous, self._enabled = self._enabled, False
        try:
            yield
        finally:
            self._enabled = previous

    @contextlib.contextmanager
    def probing(self) -> Iterator[dict[int, list[Tensor]]]:
        """Record, per adapted layer index, every forward's per-token residual ratio
        ``||g W_write M W_read h|| / ||h||`` (tensors shaped like h without its last axis)."""
        records: dict[int, list[Tensor]] = {}
        for block, i in zip(self.blocks, self.layer_indices, strict=True):
            block.probe = records.setdefault(i, [])
        try:
            yield records
        finally:
            for block in self.blocks:
                block.probe = None

    def parameter_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """AdamW groups: projections (adapter_lr or base_lr), log_mix (mix_lr, no weight decay),
        _log_alpha (gate_lr, no weight decay: decay would pull the logits and log g to 0)."""
        c, b = self.config, self.blocks
        proj_lr = base_lr if c.adapter_lr is None else c.adapter_lr
        projections = [p for m in b for p in (m.read, m.write)]
        return [
            {"name": "crma_proj", "params": projections, "lr": proj_lr},
            {
                "name": "crma_mix",
                "params": [m.log_mix for m in b],
                "lr": c.mix_lr,
                "weight_decay": 0,
            },
            {
                "name": "crma_gate",
                "params": [m._log_alpha for m in b],
                "lr": c.gate_lr,
                "weight_decay": 0,
            },
        ]

    def constraint_report(self) -> dict[str, Any]:
        """Worst case over layers (max errors and spectral norm, min entry) plus ``per_layer``."""
        pairs = zip(self.blocks, self.layer_indices, strict=True)
        per_layer = [dict(block.constraint_report(), layer=i) for block, i in pairs]
        worst = {k: max(r[k] for r in per_layer) for k in ("max_row_err", "max_col_err")}
        worst["spectral_norm"] = max(r["spectral_norm"] for r in per_layer)
        worst["min_entry"] = min(r["min_entry"] for r in per_layer)
        return {**worst, "per_layer": per_layer}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def save_crma(crma: CRMA, directory: str | Path) -> Path:
    """Write ``crma_config.json`` (adapter_type "crma") and ``crma.safetensors``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "adapter_type": "crma",
        "hidden_size": crma.hidden_size,
        "num_layers": crma.num_layers,
        "config": crma.config.to_dict(),
    }
    (directory / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in crma.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"adapter_type": "crma"})
    return directory


def load_crma(directory: str | Path, model: nn.Module | None = None) -> CRMA:
    """Load a CRMA saved by :func:`save_crma`; with ``model``, check it fits and attach it."""
    directory = Path(directory)
    if not (directory / CONFIG_NAME).is_file():
        if (directory / "adapter_config.json").is_file():
            raise ModelError(
                f"{directory} holds a LoRA (peft) adapter, not a CRMA adapter: load it with "
                f"peft.PeftModel.from_pretrained(model, '{directory}')"
            )
        raise ModelError(f"{directory} is not a CRMA adapter directory (no {CONFIG_NAME})")
    meta = json.loads((directory / CONFIG_NAME).read_text())
    if meta.get("adapter_type") != "crma":
        kind = meta.get("adapter_type")
        raise ModelError(f"{directory}/{CONFIG_NAME} says adapter_type={kind!r}, not 'crma'")
    crma = CRMA(CRMAConfig.from_dict(meta["config"]), meta["hidden_size"], meta["num_layers"])
    if not (directory / WEIGHTS_NAME).is_file():
        raise ModelError(f"{directory} has {CONFIG_NAME} but no {WEIGHTS_NAME}")
    try:
        crma.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
    except RuntimeError as e:
        raise ModelError(f"{directory}/{WEIGHTS_NAME} does not match its config: {e}") from e
    if model is not None:
        crma.attach(model)
    return crma
