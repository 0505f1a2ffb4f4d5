"""A slow, straightforward per-patch Python implementation of the k-sums detector.

It is the oracle for ``claid.cutters.hierarchy`` (tests compare the two region for
region) and the baseline of the speed benchmark. It shares nothing with the fast
path but the parameter checks (``CutSettings``), the random pass orders
(``random_order``) and the output type: no Gram matrix, no numba, no scipy.
Degrees, seeds and k-sums moves use float64 dot products patch by patch, the
k-sums distances use Eq. (3) with the cluster sums D_S, and getObject is a
flood fill. Only ``cutter="ksums"`` is implemented.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from claid.cutters.hierarchy import CutSettings
from claid.cutters.ksums import move_tolerance
from claid.cutters.random_order import node_state, random_halves, shuffle_in_place
from claid.structures import RegionTree

_IDENTICAL_COSINE = 1.0 - 1e-6


def _degrees(unit: np.ndarray, idx: list[int], alpha: float) -> tuple[list[int], float]:
    degrees = []
    min_cosine = 1.0
    members = unit[idx]
    for position, i in enumerate(idx):
        cosines = members @ unit[i]
        others = np.delete(cosines, position)
        degrees.append(int(np.count_nonzero(others > alpha)))
        if others.size:
            min_cosine = min(min_cosine, float(others.min()))
    return degrees, min_cosine


def _ksums(
    unit: np.ndarray, idx: list[int], degrees: list[int], settings: CutSettings, state: np.uint64
) -> list[int]:
    n = len(idx)
    if settings.init == "seed":
        b = int(np.argmax(degrees))
        w = int(np.argmin(degrees))
        if w == b:
            cosines = [
                float(unit[idx[b]] @ unit[i]) if a != b else np.inf for a, i in enumerate(idx)
            ]
            w = int(np.argmin(cosines))
        labels = []
        for i in idx:
            labels.append(1 if float(unit[idx[w]] @ unit[i]) > float(unit[idx[b]] @ unit[i]) else 0)
        labels[b] = 0
        labels[w] = 1
    else:
        drawn, drawn_state = random_halves(n, state)
        state = np.uint64(drawn_state)
        labels = [int(v) for v in drawn]
    sizes = [labels.count(0), labels.count(1)]
    sums = [np.zeros(unit.shape[1]), np.zeros(unit.shape[1])]  # D_S of Eq. (3)
    for a, i in enumerate(idx):
        sums[labels[a]] += unit[i]
    tolerance = move_tolerance(n)
    order = np.arange(n)
    for _ in range(settings.max_passes):
        state = np.uint64(shuffle_in_place(order, state))
        moved = 0
        for a in order:
            x = unit[idx[a]]
            own, other = labels[a], 1 - labels[a]
            d_own = 2.0 * sizes[own] - 2.0 * float(x @ sums[own])
            d_other = 2.0 * sizes[other] - 2.0 * float(x @ sums[other])
            if d_own - d_other > tolerance:
                labels[a] = other
                sizes[own] -= 1
                sizes[other] += 1
                sums[own] -= x
                sums[other] += x
                moved += 1
        if moved == 0:
            break
    return labels


def _flood_fill_components(
    members: list[int], grid: tuple[int, int], min_patches: int
) -> list[list[int]]:
    h, w = grid
    inside = set(members)
    seen: set[int] = set()
    components = []
    for start in sorted(members):
        if start in seen:
            continue
        seen.add(start)
        component = []
        frontier = deque([start])
        while frontier:
            p = frontier.popleft()
            component.append(p)
            y, x = divmod(p, w)
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    q = ny * w + nx
                    if 0 <= ny < h and 0 <= nx < w and q in inside and q not in seen:
                        seen.add(q)
                        frontier.append(q)
        if len(component) >= min_patches:
            components.append(sorted(component))
    return components


def reference_cut_regions(tokens: Any, grid: tuple[int, int], **params: Any) -> RegionTree:
    """The k-sums detector, patch by patch in Python (slow; for tests and benchmarks).

    Args:
        tokens: (H*W, D) raw tokens (numpy), row-major over ``grid``.
        grid: (H, W).
        **params: the keyword parameters of ``claid.cut_regions`` (cutter must be
            "ksums").
    Returns:
        The RegionTree that ``cut_regions`` should return for the same input, up to
        float32 round-off in near-tie decisions.
    """
    settings = CutSettings(**params)
    if settings.cutter != "ksums":
        raise ValueError("the reference implements cutter='ksums' only")
    raw = np.asarray(tokens, dtype=np.float64)
    h, w = grid
    if raw.ndim != 2 or raw.shape[0] != h * w:
        raise ValueError(f"tokens {raw.shape} do not match grid {grid}")
    n_total = h * w
    if n_total < max(2, settings.min_patches):
        return RegionTree.empty((h, w), n_cuts=0, n_nodes=1)
    unit = np.stack([row / np.linalg.norm(row) for row in raw])
    energy = [float(np.abs(row.astype(np.float32)).sum(dtype=np.float64)) for row in raw]
    ranked = sorted(range(n_total), key=lambda i: (-energy[i], i))
    k = min(n_total, max(1, int(round(settings.energy_quantile * n_total))))
    high = set(ranked[:k])

    outputs = []
    n_cuts = 0
    n_nodes = 0
    queue = deque([(list(range(n_total)), 0, -1)])
    while queue:
        idx, depth, parent = queue.popleft()
        node_index = n_nodes
        n_nodes += 1
        n = len(idx)
        degrees, min_cosine = _degrees(unit, idx, settings.alpha)
        if n < 2:
            cbar = 1.0
        else:
            edges_twice = sum(degrees) + (n if settings.count_diagonal else 0)
            cbar = edges_twice / (n * (n - 1))
        xi = sum(1 for i in idx if i in high) / n
        output = -1
        if depth > 0 and (not settings.filter_dummies or xi > settings.tau2):
            output = len(outputs)
            outputs.append((idx, depth, parent, cbar, xi))
        if settings.max_depth is not None:
            wants_cut = depth < settings.max_depth
        else:
            wants_cut = cbar < settings.tau1 or (depth == 0 and settings.cut_root == "always")
        if wants_cut and n >= max(2, settings.min_patches) and min_cosine < _IDENTICAL_COSINE:
            labels = _ksums(unit, idx, degrees, settings, node_state(settings.seed, node_index))
            n_cuts += 1
            next_parent = output if output >= 0 else parent
            for half in (0, 1):
                members = [i for a, i in enumerate(idx) if labels[a] == half]
                for child in _flood_fill_components(members, grid, settings.min_patches):
                    queue.append((child, depth + 1, next_parent))

    if not outputs:
        return RegionTree.empty((h, w), n_cuts=n_cuts, n_nodes=n_nodes)
    masks = np.zeros((len(outputs), h * w), dtype=bool)
    boxes = np.zeros((len(outputs), 4), dtype=np.int64)
    for r, (idx, *_rest) in enumerate(outputs):
        masks[r, idx] = True
        rows = [i // w for i in idx]
        cols = [i % w for i in idx]
        boxes[r] = (min(cols), min(rows), max(cols) + 1, max(rows) + 1)
    return RegionTree(
        masks=masks.reshape(-1, h, w),
        boxes=boxes,
        parent=np.array([o[2] for o in outputs], dtype=np.int64),
        depth=np.array([o[1] for o in outputs], dtype=np.int64),
        connectivity=np.array([o[3] for o in outputs], dtype=np.float32),
        energy_share=np.array([o[4] for o in outputs], dtype=np.float32),
        n_cuts=n_cuts,
        n_nodes=n_nodes,
        grid=(h, w),
    )
