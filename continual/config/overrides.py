"""Catch command-line key typos before Hydra does, and suggest the closest valid key."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from continual.config.validate import CONF_DIR


def _all_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in cfg:
        path = f"{prefix}{key}"
        keys.append(path)
        node = cfg._get_node(key)
        if OmegaConf.is_dict(node):
            keys += _all_keys(node, path + ".")
    return keys


def unknown_key_message(overrides: Sequence[str], conf_dir: Path = CONF_DIR) -> str | None:
    """A message naming the first override that sets a key absent from the composed config,
    with the closest valid key; None when every plain ``key=value`` override exists."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    groups = {p.name for p in conf_dir.iterdir() if p.is_dir()}
    plain, structural = [], []
    for text, override in zip(overrides, parsed, strict=True):
        key = override.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):  # Hydra's own settings
            continue
        if (
            override.package is None
            and not (override.is_add() or override.is_delete() or override.is_force_add())
            and key not in groups
        ):
            plain.append(key)
        else:
            structural.append(text)
    if not plain:
        return None
    # a swept group (method=lora,crma): union of the keys over its choices
    variants = [[s.split(",")[0] for s in structural]]
    for i, text in enumerate(structural):
        name, _, values = text.partition("=")
        for value in values.split(",")[1:]:
            variants.append([*variants[0][:i], f"{name}={value}", *variants[0][i + 1 :]])
    known: set[str] = set()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            for variant in variants:
                known.update(_all_keys(compose(config_name="config", overrides=variant)))
    except Exception:  # let Hydra report composition problems itself
        return None
    for key in plain:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            return (
                f"unknown config key '{key}'{hint} "
                f"(add it with '+{key}=...' if it is meant to be new)"
            )
    return None
