"""How many CPU threads torch, BLAS / OpenMP (numpy, FAISS) and numba may use.

Their defaults take every core each, and together (the forwards, the cutter's
threads, FAISS) they oversubscribe a loaded machine: on a busy 2-core machine,
describing one query took 1-2 s with torch's default threads, nine took 0.34 s in
all with one thread. ``engine.threads`` sets one budget for all of them at the
start of a run (:func:`apply_threads`): ``auto`` is half the cores this process may
use (at least 1, at most 8), an integer is taken as is.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

MAX_AUTO_THREADS = 8


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_threads(setting: int | str | None) -> int:
    """``engine.threads`` -> a thread count: ``auto`` / None -> half the usable
    cores (1..8), a positive integer as is; ValueError naming the key otherwise."""
    if setting is None or setting == "auto":
        return max(1, min(MAX_AUTO_THREADS, usable_cores() // 2))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ValueError(f"engine.threads must be 'auto' or an integer >= 1, got {setting!r}")
    return setting


def apply_threads(setting: int | str | None) -> int:
    """Limit torch (intra-op), BLAS / OpenMP (threadpoolctl), FAISS and numba to
    :func:`resolve_threads` threads; child processes (data loader workers) inherit
    ``OMP_NUM_THREADS``. Returns the count."""
    import torch
    from threadpoolctl import threadpool_limits

    n = resolve_threads(setting)
    os.environ["OMP_NUM_THREADS"] = str(n)
    try:  # first: starting numba's pool resets OpenMP's thread count, torch's included
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:
        pass
    threadpool_limits(limits=n)  # stays in force: the returned limiter is never restored
    torch.set_num_threads(n)
    log.info("CPU threads: %d (engine.threads=%s)", n, setting)
    return n
