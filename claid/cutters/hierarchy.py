"""Algorithm 1: the top-down decomposition of one image's tokens into a RegionTree.

``cut_regions`` is the public, array-in/array-out entry point (``claid.cut_regions``);
``decompose`` runs the algorithm on a precomputed Gram matrix and also returns a
per-node trace, for tests and diagnostics.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from claid.config.rules import at_least, boolean, check_fields, in_range, one_of, setting
from claid.cutters.affinity import gram_matrix, high_energy_mask, normalise_rows, token_matrix
from claid.cutters.connected_parts import get_objects
from claid.cutters.connectivity import average_connectivity, node_degrees
from claid.cutters.ksums import INITS, ksums_bisect
from claid.cutters.ncut import ncut_bisect
from claid.cutters.random_order import node_state
from claid.structures import RegionTree

CUTTERS = ("ksums", "ncut")
# "always": the root is bisected whatever its connectivity, as the authors' k_sum_main does
# (it pops the root into ksum_Is unconditionally and applies the 0.97 test to children only);
# "tau1": the root obeys the same cbar < tau1 rule as every other node (Algorithm 1 as printed)
ROOT_RULES = ("always", "tau1")

# tokens whose pairwise cosines all exceed this are one direction: no cut separates them
_IDENTICAL_COSINE = 1.0 - 1e-6


@dataclass(frozen=True, kw_only=True)
class CutSettings:
    """Every parameter of the decomposition, checked on construction.

    Attributes:
        cutter: "ksums" (default) or "ncut" (TokenCut-style normalised cut).
        tau1: stop bisecting a node when its connectivity cbar >= tau1 (Eq. 9).
            Ignored when ``max_depth`` is set.
        tau2: a node is output only when its high-energy share xi > tau2 (Eq. 10).
        alpha: edge when the cosine of two unit tokens is > alpha (Eq. 5).
        energy_quantile: share of the image's patches in H (top by raw L1 norm).
        min_patches: getObject drops connected components with fewer patches.
        init: k-sums start, "seed" (highest/lowest degree patches) or "random".
        seed: seeds the pass orders, random starts and ARPACK start vectors.
        max_passes: cap on k-sums passes per bisection.
        max_depth: None for the tau1 rule; an int d >= 1 for the fixed-depth
            variant of Table VIII (nodes at depth d are not bisected, tau1 ignored).
        filter_dummies: False outputs every node but the root (Table VII).
        count_diagonal: add the n self-edges to c(S) as the authors' code does
            (default False: the paper's Eq. 9).
        cut_root: "always" (default) bisects the root whatever its connectivity,
            as the authors' ``k_sum_main`` does (it sends the whole image to
            ``ksum_Is`` unconditionally and tests ``connect < 0.97`` on the pieces
            only); "tau1" reads the paper literally for the root too (Sec. III-C:
            "when c(S) >= tau1, the bisecting on S is not undertaken further";
            Algorithm 1 line 9: "if c(node) < tau1 then" bisect), so a root with
            cbar >= tau1 (every token alike) yields no region. Ignored while
            ``max_depth`` is set (the root is at depth 0 < max_depth).

    These dataclass defaults are the only place the defaults live: ``cut_regions``,
    ``RegionCutter`` and ``conf/cutter/_base.yaml`` take them from here (a test
    checks that the YAML base mirrors them).
    """

    cutter: str = setting("ksums", one_of(*CUTTERS))
    tau1: float = setting(0.97, in_range(0, 1))
    # tau2 = 1 would keep no node, alpha = 1 no edge: hence the open ends
    tau2: float = setting(0.2, in_range(0, 1, high_open=True))
    alpha: float = setting(0.2, in_range(-1, 1, high_open=True))
    energy_quantile: float = setting(0.3, in_range(0, 1, low_open=True))
    min_patches: int = setting(15, at_least(1))
    init: str = setting("seed", one_of(*INITS))
    seed: int = setting(0, at_least(0))
    max_passes: int = setting(500, at_least(1))
    max_depth: int | None = setting(None, at_least(1, optional=True))
    filter_dummies: bool = setting(True, boolean)
    count_diagonal: bool = setting(False, boolean)
    cut_root: str = setting("always", one_of(*ROOT_RULES))

    def __post_init__(self) -> None:
        # the ranges live in the field rules above, and only there: the config's
        # ``cutter.*`` checks (claid.config.checks.VALUE_RULES) are derived from them
        check_fields(self, "cutter")

    def as_dict(self) -> dict[str, Any]:
        """Plain dict of the settings (for provenance records)."""
        return asdict(self)


@dataclass(frozen=True)
class NodeRecord:
    """One node of the full hierarchy (root and dummies included), in pop order.

    Attributes:
        size: number of patches.
        depth: bisections from the root (root 0).
        connectivity: cbar of Eq. (9).
        energy_share: xi of Eq. (10).
        output: index in the RegionTree, -1 when not output (root, dummy).
        cut: whether the node was bisected.
        n_children: kept connected components of both halves.
        largest_piece: largest connected component of either half, kept or not
            (-1 when not cut).
        passes: k-sums passes run (0 when not cut or for ncut).
        converged: the last k-sums pass moved nothing (False when not applicable).
    """

    size: int
    depth: int
    connectivity: float
    energy_share: float
    output: int
    cut: bool
    n_children: int
    largest_piece: int
    passes: int
    converged: bool


def decompose(
    gram: np.ndarray,
    high_energy: np.ndarray,
    grid: tuple[int, int],
    settings: CutSettings,
) -> tuple[RegionTree, list[NodeRecord]]:
    """Algorithm 1 on one image, breadth first.

    Args:
        gram: (N, N) float32 cosines of the unit tokens, N = H * W.
        high_energy: (N,) bool, the set H.
        grid: (H, W).
        settings: the decomposition parameters.
    Returns:
        The output regions and the trace of every node in pop order.
    """
    h, w = grid
    n_total = h * w
    if gram.shape != (n_total, n_total) or high_energy.shape != (n_total,):
        raise ValueError(
            f"gram {gram.shape} and high_energy {high_energy.shape} do not fit grid {grid}"
        )
    s = settings
    queue: deque[tuple[np.ndarray, int, int]] = deque([(np.arange(n_total, dtype=np.int64), 0, -1)])
    outputs: list[tuple[np.ndarray, int, int, float, float]] = []
    trace: list[NodeRecord] = []
    n_cuts = 0
    while queue:
        idx, depth, parent = queue.popleft()
        node_index = len(trace)
        degrees, min_cosine = node_degrees(gram, idx, s.alpha)
        cbar = average_connectivity(degrees, s.count_diagonal)
        xi = float(np.count_nonzero(high_energy[idx])) / idx.shape[0]
        output = -1
        if depth > 0 and (not s.filter_dummies or xi > s.tau2):
            output = len(outputs)
            outputs.append((idx, depth, parent, cbar, xi))
        if s.max_depth is not None:
            wants_cut = depth < s.max_depth
        else:
            wants_cut = cbar < s.tau1 or (depth == 0 and s.cut_root == "always")
        can_cut = idx.shape[0] >= max(2, s.min_patches) and min_cosine < _IDENTICAL_COSINE
        record = dict(
            size=int(idx.shape[0]),
            depth=depth,
            connectivity=cbar,
            energy_share=xi,
            output=output,
            cut=False,
            n_children=0,
            largest_piece=-1,
            passes=0,
            converged=False,
        )
        if wants_cut and can_cut:
            state = node_state(s.seed, node_index)
            if s.cutter == "ksums":
                labels, passes, converged = ksums_bisect(
                    gram, idx, degrees, init=s.init, state=state, max_passes=s.max_passes
                )
                record.update(passes=passes, converged=converged)
            else:
                labels = ncut_bisect(gram, idx, degrees, alpha=s.alpha, state=state)
            n_cuts += 1
            largest = 0
            children = []
            # a one-sided split (NCut on a degenerate graph) would hand the node back as its
            # own child forever; it yields no children instead
            halves = (0, 1) if labels.min() != labels.max() else ()
            for half in halves:
                pieces, biggest = get_objects(idx[labels == half], grid, s.min_patches)
                children.extend(pieces)
                largest = max(largest, biggest)
            next_parent = output if output >= 0 else parent
            queue.extend((child, depth + 1, next_parent) for child in children)
            record.update(cut=True, n_children=len(children), largest_piece=largest)
        trace.append(NodeRecord(**record))
    return _region_tree(outputs, grid, n_cuts, len(trace)), trace


def _region_tree(
    outputs: list[tuple[np.ndarray, int, int, float, float]],
    grid: tuple[int, int],
    n_cuts: int,
    n_nodes: int,
) -> RegionTree:
    h, w = grid
    if not outputs:
        return RegionTree.empty(grid, n_cuts=n_cuts, n_nodes=n_nodes)
    n_regions = len(outputs)
    masks = np.zeros((n_regions, h * w), dtype=bool)
    boxes = np.zeros((n_regions, 4), dtype=np.int64)
    for r, (idx, *_rest) in enumerate(outputs):
        masks[r, idx] = True
        rows, cols = np.divmod(idx, w)
        boxes[r] = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    return RegionTree(
        masks=masks.reshape(n_regions, h, w),
        boxes=boxes,
        parent=np.array([o[2] for o in outputs], dtype=np.int64),
        depth=np.array([o[1] for o in outputs], dtype=np.int64),
        connectivity=np.array([o[3] for o in outputs], dtype=np.float32),
        energy_share=np.array([o[4] for o in outputs], dtype=np.float32),
        n_cuts=n_cuts,
        n_nodes=n_nodes,
        grid=(h, w),
    )


def cut_regions(tokens: Any, grid: tuple[int, int] | None = None, **settings: Any) -> RegionTree:
    """Decompose one image's patch tokens into CLAID instance regions (Algorithm 1).

    Tokens are L2-normalised; one float32 Gram matrix gives the affinity
    (cosine > alpha, Eq. 5) and the k-sums distances (Eq. 3). The high-energy set H
    is the top ``energy_quantile`` of the *raw* tokens by L1 norm. Starting from
    the root (all patches), nodes are popped breadth first; a popped node other
    than the root is output when its share of H exceeds tau2 (or always, with
    ``filter_dummies=False``); it is bisected (k-sums or NCut) while its
    connectivity cbar < tau1 (or, with ``max_depth``, while its depth < max_depth;
    the root is bisected whatever its cbar unless ``cut_root="tau1"``),
    and each half's 8-connected components of at least ``min_patches`` patches
    become its children. A node with fewer than ``max(2, min_patches)`` patches,
    or whose tokens all point the same way, is a leaf. See ``CutSettings`` for
    each parameter.

    Args:
        tokens: (H*W, D) with ``grid=(H, W)``, or (H, W, D); numpy or torch; raw
            (un-normalised) last-layer patch tokens, row-major over the grid.
        grid: (H, W), needed for flat tokens.
        **settings: keyword fields of ``CutSettings`` (cutter, tau1, tau2, alpha,
            energy_quantile, min_patches, init, seed, max_passes, max_depth,
            filter_dummies, count_diagonal, cut_root); unset ones take its defaults.
    Returns:
        RegionTree: masks (R, H, W) bool; boxes (R, 4) int64 patch units (x1, y1, x2,
        y2, exclusive end); parent (R,) nearest output ancestor or -1; depth (R,)
        >= 1; connectivity and energy_share (R,) float32; n_cuts; n_nodes; grid.
        Parents come before their children. Constant tokens or fewer than
        ``min_patches`` patches give an empty tree.
    Raises:
        ValueError: malformed tokens (rank, grid mismatch, NaN/inf, zero rows) or
            parameters out of range.
        TypeError: a keyword that is not a ``CutSettings`` field.
    """
    return cut_settings_regions(tokens, grid, CutSettings(**settings))


def cut_settings_regions(
    tokens: Any, grid: tuple[int, int] | None, settings: CutSettings
) -> RegionTree:
    """``cut_regions`` with the parameters already checked in a ``CutSettings``."""
    raw, grid = token_matrix(tokens, grid)
    if raw.shape[0] < max(2, settings.min_patches):
        return RegionTree.empty(grid, n_cuts=0, n_nodes=1)
    unit = normalise_rows(raw)
    tree, _ = decompose(
        gram_matrix(unit), high_energy_mask(raw, settings.energy_quantile), grid, settings
    )
    return tree
