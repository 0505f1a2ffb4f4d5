"""Which regions a picture draws: at most :data:`MAX_DRAWN_REGIONS` per image, the top
of the hierarchy first (smallest depth), the largest first within a depth, so that an
image of 50,000 regions is drawn as quickly as one of 50 and the picture says how
many it left out.

    drawn_regions(depth, parent, areas, limit) -> (kept rows, their parents, left out)
    tree_layout(parent) -> x position of every node (iterative: a chain of any depth)
"""

from __future__ import annotations

import numpy as np

#: regions drawn per image in the run's pictures (hierarchy panels and tree)
MAX_DRAWN_REGIONS = 200


def drawn_regions(depth: np.ndarray, parent: np.ndarray, areas: np.ndarray,
                  limit: int = MAX_DRAWN_REGIONS) -> tuple[np.ndarray, np.ndarray, int]:
    """The rows to draw, in their original order, each one's parent among them (the
    nearest kept ancestor, -1 for none) and how many rows were left out.

    Args:
        depth: (R,) int depth of each region. parent: (R,) int index of its parent
            within the image (-1 none). areas: (R,) its size (pixels or cells).
    """
    depth = np.asarray(depth, dtype=np.int64)
    parent = np.asarray(parent, dtype=np.int64)
    count = len(depth)
    if count <= limit:
        return np.arange(count), parent.copy(), 0
    order = np.lexsort((-np.asarray(areas, dtype=np.float64), depth))
    keep = np.sort(order[:limit])
    position = np.full(count, -1, dtype=np.int64)
    position[keep] = np.arange(len(keep))
    new_parent = np.full(len(keep), -1, dtype=np.int64)
    for k, row in enumerate(keep):
        up, steps = int(parent[row]), 0
        while 0 <= up < count and position[up] < 0 and steps < count:  # bounded: no cycle loops
            up, steps = int(parent[up]), steps + 1
        new_parent[k] = position[up] if 0 <= up < count else -1
    return keep, new_parent, count - len(keep)


def tree_layout(parent: np.ndarray) -> np.ndarray:
    """x position of every node of a forest (parent -1 = child of the root): leaves
    left to right in depth-first order, a parent above the middle of its children.
    A parent outside the forest counts as the root; a cycle's nodes are left at 0."""
    parent = np.asarray(parent, dtype=np.int64)
    count = len(parent)
    children: dict[int, list[int]] = {}
    for node, up in enumerate(parent.tolist()):
        children.setdefault(up if 0 <= up < count else -1, []).append(node)
    x = np.zeros(count, dtype=np.float64)
    next_leaf = 0.0
    stack = [(top, False) for top in reversed(children.get(-1, []))]
    while stack:  # depth-first, children before their parent is placed
        node, expanded = stack.pop()
        kids = children.get(node, [])
        if not kids:
            x[node], next_leaf = next_leaf, next_leaf + 1.0
        elif expanded:
            x[node] = float(np.mean(x[kids]))
        else:
            stack.append((node, True))
            stack.extend((kid, False) for kid in reversed(kids))
    return x
