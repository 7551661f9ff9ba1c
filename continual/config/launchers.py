"""Hydra launcher choices (``hydra/launcher=<name>``) and the plugin package each one needs,
so that a missing plugin is one clear error with the install command, not a Hydra traceback."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from continual.config.validate import CONF_DIR

INSTALL = "pip install -e '.[cluster]'"
_SUBMITIT = ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher")
_JOBLIB = ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher")
# Our conf/hydra/launcher/ configs, and the plugins' own names they build on.
PLUGIN_OF: dict[str, tuple[str, str]] = {
    "slurm": _SUBMITIT,
    "local_submitit": _SUBMITIT,
    "submitit_slurm": _SUBMITIT,
    "submitit_local": _SUBMITIT,
    "joblib_local": _JOBLIB,
    "joblib": _JOBLIB,
}


def launchers() -> list[str]:
    """The launcher configs that ship in ``conf/hydra/launcher/``."""
    return sorted(p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml"))


def launcher_problem(overrides: Sequence[str]) -> str | None:
    """A message when an override picks a launcher whose Hydra plugin is not installed (with
    the command that installs it); None otherwise (an unknown name is left to Hydra)."""
    for override in overrides:
        key, _, name = override.partition("=")
        if key.lstrip("+~") != "hydra/launcher" or name not in PLUGIN_OF:
            continue
        module, dist = PLUGIN_OF[name]
        if importlib.util.find_spec(module) is None:
            return (
                f"hydra/launcher={name} needs the Hydra plugin {dist}, which is not installed; "
                f"install the cluster extra with `{INSTALL}` (or `pip install {dist}`)."
            )
    return None
