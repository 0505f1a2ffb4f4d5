"""Fixed, seeded token maps cut with fixed settings must give the stored trees exactly.

A change to the cutter's behaviour (a rule, a default, an order of moves, a seed
stream) shows up here as a failing test and, once accepted, as a diff of
``golden/trees.json`` that a reviewer reads. Rewrite the file after an intended
change with ``CLAID_WRITE_GOLDEN=1 python -m pytest tests/cutters/test_golden_tree.py``
and commit it with the change that caused it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from claid.cutters import cut_regions
from claid.cutters.planted import planted_token_map

GOLDEN = Path(__file__).parent / "golden" / "trees.json"

# name -> (map seed, settings); the settings not named take CutSettings' defaults.
# "planted" maps have a loosely connected root; the "uniform" one (every cosine > alpha,
# root cbar = 1.0) shows the root rule (cut_root) in the stored tree.
CASES: dict[str, tuple[int, dict]] = {
    "planted4_defaults": (4, {}),
    "planted6_random_init": (6, {"init": "random", "seed": 3}),
    "planted2_ncut_no_filter": (2, {"cutter": "ncut", "filter_dummies": False}),
    "planted0_fixed_depth": (0, {"max_depth": 3, "filter_dummies": False, "min_patches": 8}),
    "uniform1_defaults": (1, {}),
}


def _uniform_map(seed: int) -> tuple[np.ndarray, tuple[int, int]]:
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(32)
    noise = rng.standard_normal((20 * 24, 32)) * 0.35 * np.linalg.norm(base) / np.sqrt(32)
    return (base + noise).astype(np.float32), (20, 24)


def _tree_record(name: str, seed: int, settings: dict) -> dict:
    if name.startswith("uniform"):
        tokens, grid = _uniform_map(seed)
    else:
        planted = planted_token_map((16, 20), 64, seed=seed)
        tokens, grid = planted.tokens, planted.grid
    tree = cut_regions(tokens, grid, **settings)
    return {
        "settings": settings,
        "grid": list(tree.grid),
        "n_cuts": tree.n_cuts,
        "n_nodes": tree.n_nodes,
        # each region as its row-major patch indices, so a diff shows which patches moved
        "regions": [np.flatnonzero(mask).tolist() for mask in tree.masks],
        "parent": tree.parent.tolist(),
        "depth": tree.depth.tolist(),
        "boxes": tree.boxes.tolist(),
        "connectivity": [round(float(c), 5) for c in tree.connectivity],
        "energy_share": [round(float(e), 5) for e in tree.energy_share],
    }


def _write_golden() -> None:
    records = {name: _tree_record(name, seed, settings) for name, (seed, settings) in CASES.items()}
    tmp = GOLDEN.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(records, indent=1) + "\n")
    os.replace(tmp, GOLDEN)


if os.environ.get("CLAID_WRITE_GOLDEN") == "1":
    _write_golden()


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


def test_every_case_is_stored(golden):
    assert set(golden) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_cut_matches_the_stored_tree(golden, name):
    seed, settings = CASES[name]
    expected = golden[name]
    actual = _tree_record(name, seed, settings)
    assert actual["settings"] == expected["settings"]
    assert (actual["n_cuts"], actual["n_nodes"]) == (expected["n_cuts"], expected["n_nodes"])
    assert len(actual["regions"]) == len(expected["regions"])
    for r, (got, want) in enumerate(zip(actual["regions"], expected["regions"])):
        assert got == want, f"{name}: region {r} holds other patches"
    for key in ("parent", "depth", "boxes"):
        assert actual[key] == expected[key], f"{name}: {key}"
    np.testing.assert_allclose(actual["connectivity"], expected["connectivity"], atol=1e-4)
    np.testing.assert_allclose(actual["energy_share"], expected["energy_share"], atol=1e-4)


def test_stored_trees_are_not_trivial(golden):
    # a golden file of empty trees would pass for almost any cutter
    for name, record in golden.items():
        if name.startswith("uniform"):  # only the root is cut: its pieces are the regions
            assert len(record["regions"]) >= 2 and record["n_cuts"] == 1, name
        else:
            assert len(record["regions"]) >= 4 and max(record["depth"]) >= 2, name
