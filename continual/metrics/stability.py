"""Gradient-norm stability of one training stage (pure function, no I/O).

Definitions (per stage, over the global L2 gradient norm before clipping, one value per
optimizer step; non-finite norms are counted and left out):

* ``peak``: the largest norm, ``peak_step`` the 0-based step of its first occurrence;
* ``mean``, ``median`` and ``p95`` (95th percentile, linear interpolation);
* ``n_spikes``: steps whose norm exceeds ``spike_factor`` (default 5) times the stage median.

The vendor's "peak gradient-norm reduction" of CRMA over LoRA compares ``peak`` between runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["gradient_stability"]


def gradient_stability(
    grad_norms: Sequence[float], spike_factor: float = 5.0
) -> dict[str, float | int]:
    """Gradient-norm stability summary for one stage (global norm before clipping).

    Keys: ``peak`` (max norm), ``peak_step`` (0-based index of the first max), ``mean``,
    ``median``, ``p95`` (numpy linear-interpolation percentile), ``n_spikes`` (steps with
    norm ``> spike_factor * median``), ``spike_factor``, ``n_steps`` (all steps given) and
    ``n_nonfinite`` (NaN/inf norms, e.g. overflowed steps; excluded from the other statistics).
    Units are those of the norm (dimensionless L2 norm of the gradient).
    """
    arr = np.asarray(list(grad_norms), dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError("gradient_stability needs a non-empty 1-D sequence of gradient norms")
    if not spike_factor > 0:
        raise ValueError(f"spike_factor must be > 0, got {spike_factor}")
    finite = np.isfinite(arr)
    n_nonfinite = int((~finite).sum())
    if not finite.any():
        nan = float("nan")
        return {
            "peak": nan,
            "peak_step": -1,
            "mean": nan,
            "median": nan,
            "p95": nan,
            "n_spikes": 0,
            "spike_factor": float(spike_factor),
            "n_steps": int(arr.size),
            "n_nonfinite": n_nonfinite,
        }
    vals = arr[finite]
    steps = np.flatnonzero(finite)
    median = float(np.median(vals))
    return {
        "peak": float(vals.max()),
        "peak_step": int(steps[int(np.argmax(vals))]),
        "mean": float(vals.mean()),
        "median": median,
        "p95": float(np.percentile(vals, 95, method="linear")),
        "n_spikes": int((vals > spike_factor * median).sum()),
        "spike_factor": float(spike_factor),
        "n_steps": int(arr.size),
        "n_nonfinite": n_nonfinite,
    }
