"""LoRA initialisation (``method.lora.init``) through peft's own ``init_lora_weights`` options.

* ``default`` - peft's default: A Kaiming-uniform, B zero (what every committed study used);
* ``gaussian`` - A Gaussian with standard deviation 1/r, B zero;
* ``pissa`` / ``pissa_niter_<k>`` - PiSSA (Meng et al. 2024): A and B start from the top-r
  singular vectors of each target weight (exact SVD, or k randomized subspace iterations), and
  peft rewrites the base weight to the residual ``W_res = W - s B0 A0``;
* ``olora`` - OLoRA (QR-based), which also rewrites the base weight.

Every option keeps the step-0 model equal to the base. The two base-rewriting options need care
when several adapters share one base (``frozen_lora``, ``modular_crma``): :class:`BaseRestorer`
folds each finished adapter into a plain LoRA of the original base with peft's PiSSA/OLoRA
conversion (``delta W = s (B A - B0 A0)`` as a rank-2r LoRA) and puts the original base weights
back, so that every domain is served by "original base + its adapter" and a later domain's
adapter starts from the original base. While a domain's adapter trains, the base holds that
adapter's residual; the recipe evaluates only between stages.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from continual.errors import ConfigError

CHOICES = ("default", "gaussian", "pissa", "pissa_niter_<k>", "olora")


def peft_init(name: str) -> bool | str:
    """peft's ``init_lora_weights`` value for ``method.lora.init``; ConfigError if unknown."""
    name = str(name)
    if name == "default":
        return True
    if name in ("gaussian", "pissa", "olora") or re.fullmatch(r"pissa_niter_[1-9]\d*", name):
        return name
    raise ConfigError(
        f"method.lora.init={name!r} is not a LoRA initialisation we support; choose one of "
        f"{', '.join(CHOICES)} (peft's init_lora_weights)."
    )


def rewrites_base(name: str) -> bool:
    """True for the options that rewrite the base weights (PiSSA, OLoRA)."""
    return str(name).startswith(("pissa", "olora"))


class BaseRestorer:
    """Keeps the original weights of the base's linear layers and turns a finished
    base-rewriting adapter into a plain LoRA of the original base (see the module docstring).

    Usage: :meth:`remember_initial` right after the adapter is created (before training), then
    :meth:`fold` when its stage ends.
    """

    def __init__(self, base: torch.nn.Module) -> None:
        self._weights = {
            m: m.weight.detach().clone() for m in base.modules() if isinstance(m, torch.nn.Linear)
        }
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def remember_initial(self, model: torch.nn.Module, adapter: str) -> None:
        """Save ``adapter``'s initial weights (config with init True, as peft's conversion
        requires) under a name that does not clash with the adapter."""
        self._tmp = tempfile.TemporaryDirectory(prefix="continual-lora-init-")
        config = model.peft_config[adapter]
        init, config.init_lora_weights = config.init_lora_weights, True
        try:
            model.save_pretrained(self._tmp.name, selected_adapters=[adapter])
        finally:
            config.init_lora_weights = init
        shutil.move(Path(self._tmp.name) / adapter, Path(self._tmp.name) / "initial")

    def fold(self, model: torch.nn.Module, adapter: str, trainable: bool = False) -> None:
        """Replace ``adapter`` by its conversion to a plain rank-2r LoRA of the original base and
        put the original base weights back."""
        if self._tmp is None:
            raise RuntimeError(f"fold({adapter!r}) without remember_initial")
        tmp = Path(self._tmp.name)
        model.save_pretrained(
            tmp / "converted", selected_adapters=[adapter],
            path_initial_model_for_weight_conversion=str(tmp / "initial"),
        )  # fmt: skip
        with warnings.catch_warnings():  # "adapter was active which is now deleted": it
            warnings.filterwarnings("ignore", "Adapter .* was active")  # is re-added below
            model.delete_adapter(adapter)
        with torch.no_grad():
            for module, weight in self._weights.items():
                module.weight.copy_(weight)
        model.load_adapter(tmp / "converted" / adapter, adapter, is_trainable=trainable)
        self._tmp.cleanup()
        self._tmp = None
