"""How a run's process executes: its CPU thread count (``threads`` in conf/config.yaml) and
whether the C allocator keeps freed memory (``cpu_malloc_retain``).

Parallel jobs on one machine (``hydra/launcher=joblib_local``) would otherwise each start one
thread per core and slow each other down; ``threads=N`` gives each job N.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Any

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


# glibc's mallopt(3) parameters (malloc.h) and the largest mmap threshold it accepts on 64-bit.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
TRIM_THRESHOLD_MAX = 2**31 - 1  # mallopt takes an int


def check_malloc_retain(value: object) -> bool:
    """``cpu_malloc_retain`` if it is a bool, else a ConfigError with the fix."""
    if not isinstance(value, bool):
        raise ConfigError(f"cpu_malloc_retain={value!r} must be true or false.")
    return value


def retain_freed_memory(enabled: object = True) -> bool:
    """Make glibc keep the memory that freed tensors give back inside the process; returns
    whether it did (False when disabled, or not on glibc).

    By default glibc serves blocks above a moving threshold with fresh ``mmap`` pages and gives
    the top of the heap back to the kernel once more than twice that threshold is free. A
    training step allocates and frees the same activations, logits and gradients every step,
    so each step faults its working set in again (kernel time zeroing pages). Serving every
    block up to 32 MB from the heap and never trimming it keeps those pages mapped: the process
    holds on to its peak heap instead of returning it between steps. Results do not change;
    only where tensors live does.
    """
    if not check_malloc_retain(enabled) or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; musl's stub returns 0 for everything
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_MAX)
    )


def apply_runtime(cfg: Any) -> None:
    """A run's process settings from its config: ``threads``, then ``cpu_malloc_retain``
    (before anything large is allocated). Called by ``continual.run``, ``run_experiment`` and
    the benches that build runs, so that each measures the process state runs have."""
    apply_threads(cfg.get("threads"))
    retain_freed_memory(cfg.get("cpu_malloc_retain", True))
