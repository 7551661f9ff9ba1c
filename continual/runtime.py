"""How a run's process executes: its CPU thread count (``threads`` in conf/config.yaml).

Parallel jobs on one machine (``hydra/launcher=joblib_local``) would otherwise each start one
thread per core and slow each other down; ``threads=N`` gives each job N.
"""

from __future__ import annotations

import os

from continual.errors import ConfigError

# Read by OpenMP, MKL, OpenBLAS, numexpr and the tokenizers' thread pool when they start.
THREAD_ENV = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "RAYON_NUM_THREADS",
)  # fmt: skip


def check_threads(threads: object) -> int | None:
    """``threads`` if it is null or a positive integer, else a ConfigError with the fix."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(
            f"threads={threads!r} must be a positive integer (CPU threads of this run) or null "
            "(the libraries' default); e.g. threads=2."
        )
    return threads


def apply_threads(threads: object) -> None:
    """Limit this process to ``threads`` CPU threads (nothing when null): torch's intra-op
    pool, the environment of libraries that start later, and, with threadpoolctl installed,
    the BLAS/OpenMP pools already loaded."""
    n = check_threads(threads)
    if n is None:
        return
    import torch

    for name in THREAD_ENV:
        os.environ[name] = str(n)
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(n)
