"""k-sums bisection of one node (Sec. III-A/B): minimise objective (1),
``sum_r sum_{i<j in S_r} ||x_i - x_j||^2``, over two clusters by single-patch moves.

With unit features the aggregated distance of Eq. (3) is
``d(x_i, S) = 2 |S| - 2 x_i . D_S`` and ``x_i . D_S = sum_{j in S} G_ij``. The kernel
keeps ``s[c, i] = sum_{j in S_c} G_ij`` for both clusters, so testing a move is O(1)
and an accepted move costs O(n) (one Gram row added to one cluster's sums and
subtracted from the other's). Moving x_i from S_w to S_v changes the objective by
``d(x_i, S_v) - d(x_i, S_w)`` (the self term of S_w is zero), so only strictly
improving moves are made and the objective never increases.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from claid.cutters.random_order import random_halves, shuffle_in_place

INITS = ("seed", "random")


@njit(cache=True, nogil=True)
def cluster_sums(gram: np.ndarray, idx: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(2, n) float64 ``s[c, a] = sum_{b: labels[b] == c} G[idx[a], idx[b]]`` (self included)."""
    n = idx.shape[0]
    sums = np.zeros((2, n), dtype=np.float64)
    in_one = labels.astype(np.float32)
    for a in range(n):
        row = gram[idx[a]]
        total = 0.0
        one = 0.0
        # full rows and no branch: this vectorises, the symmetric half loop does not
        for b in range(n):
            g = row[idx[b]]
            total += g
            one += g * in_one[b]
        sums[1, a] = one
        sums[0, a] = total - one
    return sums


@njit(cache=True, nogil=True)
def seed_labels(gram: np.ndarray, idx: np.ndarray, degrees: np.ndarray) -> np.ndarray:
    """Seeded initial halves (Sec. III-B, with Eq. 6/7's argmin/argmax typo fixed).

    x_b is the patch of highest in-node degree, x_w the one of lowest degree (first
    in ``idx`` order on ties); every other patch joins the seed with the larger
    cosine (x_b on equal cosines). This is the paper's rule ("closer to x_b or
    x_w"), not the authors' code, which puts a patch with x_b only when it is linked
    to x_b and not to x_w. When all degrees are equal, x_w is the patch least
    similar to x_b. Returns (n,) int8 labels, 0 = S_b, 1 = S_w.
    """
    n = idx.shape[0]
    b = np.argmax(degrees)
    w = np.argmin(degrees)
    row_b = gram[idx[b]]
    if w == b:
        best = np.inf
        for a in range(n):
            if a != b and row_b[idx[a]] < best:
                best = row_b[idx[a]]
                w = a
    row_w = gram[idx[w]]
    labels = np.zeros(n, dtype=np.int8)
    for a in range(n):
        if row_w[idx[a]] > row_b[idx[a]]:
            labels[a] = 1
    labels[b] = 0
    labels[w] = 1
    return labels


@njit(cache=True, nogil=True)
def ksums_passes(
    gram: np.ndarray,
    idx: np.ndarray,
    labels: np.ndarray,
    max_passes: int,
    state: np.uint64,
    tolerance: float,
) -> tuple[int, bool, np.uint64]:
    """Greedy k-sums passes (k = 2) from ``labels``, modified in place.

    Each pass visits the node's patches in a fresh random order and moves a patch
    to the other cluster when that lowers objective (1) by more than
    ``tolerance``. Stops after a pass without moves or after ``max_passes`` passes.

    Args:
        gram: (N, N) float32 cosines of unit tokens.
        idx: (n,) int64 global patch indices of the node.
        labels: (n,) int8 in {0, 1}, both clusters non-empty; updated in place.
        max_passes: cap on the number of passes (>= 1).
        state: uint64 generator state (``random_order.node_state``).
        tolerance: smallest objective decrease that counts as a move; guards
            against float32 round-off making a tie look like an improvement.
    Returns:
        (passes run, converged = the last pass moved nothing, advanced state).
    """
    n = idx.shape[0]
    sums = cluster_sums(gram, idx, labels)
    # only S_1's sums change; S_0's follow as the (fixed) node total minus them
    total = sums[0] + sums[1]
    sum_one = sums[1].copy()
    n_one = 0
    for a in range(n):
        n_one += labels[a]
    order = np.arange(n)
    passes = 0
    converged = False
    while passes < max_passes:
        state = shuffle_in_place(order, state)
        passes += 1
        moved = 0
        for t in range(n):
            a = order[t]
            d_zero = 2.0 * (n - n_one) - 2.0 * (total[a] - sum_one[a])
            d_one = 2.0 * n_one - 2.0 * sum_one[a]
            if labels[a] == 0:
                gain = d_zero - d_one
                sign = 1.0
            else:
                gain = d_one - d_zero
                sign = -1.0
            if gain > tolerance:
                labels[a] = 1 - labels[a]
                n_one += np.int64(sign)
                row = gram[idx[a]]
                for b in range(n):
                    sum_one[b] += sign * row[idx[b]]
                moved += 1
        if moved == 0:
            converged = True
            break
    return passes, converged, state


def move_tolerance(n: int) -> float:
    """Objective decrease a k-sums move must beat, for a node of n patches.

    The float32 Gram entries carry ~1e-7 relative error and a distance sums n of
    them, so differences below ~1e-6 n are round-off, not improvements.
    """
    return 1e-6 * max(1, n)


def ksums_bisect(
    gram: np.ndarray,
    idx: np.ndarray,
    degrees: np.ndarray,
    *,
    init: str = "seed",
    state: int | np.uint64 = 0,
    max_passes: int = 500,
) -> tuple[np.ndarray, int, bool]:
    """Bisect one node with k-sums.

    Args:
        gram: (N, N) float32 cosines of the image's unit tokens.
        idx: (n,) int64 sorted global patch indices of the node, n >= 2.
        degrees: (n,) int64 in-node degrees (``connectivity.node_degrees``).
        init: "seed" (highest/lowest degree seeds) or "random" (fair coin per patch).
        state: uint64 generator state of this node.
        max_passes: cap on the passes.
    Returns:
        labels (n,) int8 (0 = S_b, 1 = S_w), passes run, converged flag.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if idx.shape[0] < 2:
        raise ValueError(f"cannot bisect a node of {idx.shape[0]} patch(es)")
    state = np.uint64(state)
    if init == "seed":
        labels = seed_labels(gram, idx, degrees)
    else:
        labels, drawn_state = random_halves(idx.shape[0], state)
        state = np.uint64(drawn_state)
    passes, converged, _ = ksums_passes(
        gram, idx, labels, int(max_passes), state, move_tolerance(idx.shape[0])
    )
    return labels, int(passes), bool(converged)


def aggregated_distances(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Eq. (3) for unit features: (2, n) cluster sums and (2,) sizes ->
    (2, n) float64 ``d(x_i, S_c) = 2 |S_c| - 2 sum_{j in S_c} x_i . x_j``."""
    return 2.0 * np.asarray(counts, dtype=np.float64)[:, None] - 2.0 * sums


def ksums_objective(unit_tokens: np.ndarray, labels: np.ndarray) -> float:
    """Objective (1) of (n, D) rows split by (n,) labels, in O(n D) and float64:
    per cluster ``sum_{i<j} ||x_i - x_j||^2 = n_c sum_i ||x_i||^2 - ||D_c||^2``."""
    x = np.asarray(unit_tokens, dtype=np.float64)
    total = 0.0
    for c in np.unique(labels):
        members = x[labels == c]
        centre_sum = members.sum(axis=0)
        total += members.shape[0] * float((members * members).sum()) - float(
            centre_sum @ centre_sum
        )
    return total
