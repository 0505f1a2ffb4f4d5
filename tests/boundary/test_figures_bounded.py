"""The run's pictures draw a bounded number of regions per image (the top of the
hierarchy, the largest first) and say how many they left out."""

import numpy as np
from PIL import Image

from claid.drawn_regions import MAX_DRAWN_REGIONS, drawn_regions, tree_layout
from claid.figures import draw_hierarchy


def _old_tree_layout(parent):
    """The recursive layout the pictures used before (the reference)."""
    children = {}
    for node, up in enumerate(parent.tolist()):
        children.setdefault(int(up), []).append(node)
    x = np.zeros(len(parent))
    next_leaf = [0.0]

    def place(node):
        kids = children.get(node, [])
        if not kids:
            x[node] = next_leaf[0]
            next_leaf[0] += 1.0
        else:
            x[node] = float(np.mean([place(k) for k in kids]))
        return x[node]

    for top in children.get(-1, []):
        place(top)
    return x


def _forest(n, seed):
    rng = np.random.default_rng(seed)
    parent = np.array([-1 if k == 0 or rng.random() < 0.2 else int(rng.integers(0, k)) for k in range(n)])
    depth = np.zeros(n, np.int64)
    for k in range(n):
        depth[k] = 1 if parent[k] < 0 else depth[parent[k]] + 1
    return parent, depth


def test_the_iterative_layout_is_the_recursive_one_and_survives_a_deep_chain():
    for seed in range(5):
        parent, _ = _forest(300, seed)
        assert np.array_equal(tree_layout(parent), _old_tree_layout(parent))
    chain = np.arange(-1, 20_000 - 1)  # 20,000 deep: the recursive layout overflowed
    assert tree_layout(chain).shape == (20_000,)


def test_the_top_of_the_hierarchy_is_kept_and_parents_point_inside():
    parent, depth = _forest(5000, 1)
    areas = np.random.default_rng(2).random(5000)
    keep, kept_parent, left_out = drawn_regions(depth, parent, areas)
    assert len(keep) == MAX_DRAWN_REGIONS and left_out == 5000 - MAX_DRAWN_REGIONS
    assert depth[keep].max() <= np.sort(depth)[MAX_DRAWN_REGIONS]
    assert ((kept_parent >= -1) & (kept_parent < len(keep))).all()
    for k, row in enumerate(keep):  # each kept parent is a true ancestor
        if kept_parent[k] >= 0:
            up = parent[row]
            while up != keep[kept_parent[k]]:
                assert up >= 0
                up = parent[up]


def test_a_cycle_of_parents_does_not_hang():
    parent = np.array([1, 2, 0] + [-1] * 300)
    keep, kept_parent, _ = drawn_regions(np.ones(303, np.int64), parent, np.arange(303.0)[::-1])
    assert len(keep) == MAX_DRAWN_REGIONS


def test_a_hierarchy_of_thousands_of_regions_is_drawn_bounded_and_says_so():
    parent, depth = _forest(3000, 3)
    masks = np.random.default_rng(0).random((3000, 6, 8)) > 0.5
    image = Image.new("RGB", (64, 48))
    fig = draw_hierarchy(image, masks, depth, parent, title="img.jpg", cell=(8.0, 8.0), left_out=7)
    tree = fig.axes[-1]
    assert len(tree.collections) <= 1 + MAX_DRAWN_REGIONS * (1 + int(depth.max()))
    assert f"{3000 - MAX_DRAWN_REGIONS + 7:,} regions not drawn" in fig.axes[0].get_title()
