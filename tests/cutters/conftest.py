"""Shared fixtures: small planted token maps (fast to cut, known ground truth)."""

from __future__ import annotations

import numpy as np
import pytest

from claid.cutters.affinity import gram_matrix, high_energy_mask, normalise_rows
from claid.cutters.planted import PlantedTokenMap, planted_token_map


@pytest.fixture(scope="session")
def small_map() -> PlantedTokenMap:
    return planted_token_map((16, 20), 64, seed=1)


@pytest.fixture(scope="session")
def small_maps() -> list[PlantedTokenMap]:
    return [planted_token_map((16, 20), 64, seed=s) for s in range(6)]


@pytest.fixture(scope="session")
def small_gram(small_map: PlantedTokenMap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit tokens, Gram matrix, high-energy mask) of ``small_map``."""
    unit = normalise_rows(small_map.tokens)
    return unit, gram_matrix(unit), high_energy_mask(small_map.tokens, 0.3)
