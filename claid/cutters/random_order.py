"""Seeded, thread-safe random numbers for the bisection passes.

The k-sums passes visit patches in a random order and ``init="random"`` draws
random halves. Both run inside numba kernels that release the GIL and may run in
a thread pool, so they cannot share a global generator; each node gets its own
64-bit state derived from the user's seed and the node's pop index, and the
SplitMix64 generator below advances it. The same functions serve the pure-Python
reference (``claid.cutters.reference``), so both visit patches in the same order.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)


@njit(cache=True, nogil=True)
def splitmix64(state: np.uint64) -> tuple[np.uint64, np.uint64]:
    """One SplitMix64 step: ``state -> (next_state, 64-bit output)``."""
    state = np.uint64(state) + _GOLDEN
    z = state
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return state, z ^ (z >> _S31)


def node_state(seed: int, node_index: int) -> np.uint64:
    """The generator state of one hierarchy node.

    Args:
        seed: the user's seed (>= 0).
        node_index: the node's position in pop order (root = 0).
    Returns:
        uint64 state; distinct seeds or nodes give unrelated streams.
    """
    mixed = (int(seed) * 0x9E3779B97F4A7C15 + int(node_index) * 0xD1B54A32D192ED03) % 2**64
    _, out = splitmix64(np.uint64(mixed))
    return np.uint64(out)


@njit(cache=True, nogil=True)
def shuffle_in_place(order: np.ndarray, state: np.uint64) -> np.uint64:
    """Fisher-Yates shuffle of the int64 array ``order``; returns the advanced state.

    Numba hands uint64 results back to Python as ``int``; wrap them in ``np.uint64``
    before passing them in again (an int above 2**63 does not fit numba's int64).
    """
    state = np.uint64(state)
    for i in range(order.shape[0] - 1, 0, -1):
        state, z = splitmix64(state)
        j = np.int64(z % np.uint64(i + 1))
        tmp = order[i]
        order[i] = order[j]
        order[j] = tmp
    return state


@njit(cache=True, nogil=True)
def random_halves(n: int, state: np.uint64) -> tuple[np.ndarray, np.uint64]:
    """(n,) int8 labels in {0, 1}, each a fair coin, both halves non-empty when n >= 2.

    Returns the labels and the advanced state.
    """
    state = np.uint64(state)
    labels = np.zeros(n, dtype=np.int8)
    n_one = 0
    for i in range(n):
        state, z = splitmix64(state)
        labels[i] = np.int8(z & np.uint64(1))
        n_one += labels[i]
    if n >= 2 and (n_one == 0 or n_one == n):
        # a one-sided draw (probability 2^(1-n)) cannot be bisected: flip one patch
        state, z = splitmix64(state)
        j = np.int64(z % np.uint64(n))
        labels[j] = 1 - labels[j]
    return labels, state
