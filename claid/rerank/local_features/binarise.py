"""128-bit codes of local descriptors, as the binarised AMES model sees them:
``sign(normalise(x) @ W)`` with the model's ITQ projection ``W`` (D, 128), stored as
bits (1 where the projection is > 0), 16 bytes a descriptor. Read back as +-1.
(A projection exactly 0, where the model's ``sign`` gives 0, is stored as -1.)
"""

from __future__ import annotations

import numpy as np


def binary_codes(descriptors: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """(n, D) descriptors -> (n, bits / 8) uint8 packed codes."""
    if projection.ndim != 2 or projection.shape[1] % 8 or descriptors.shape[-1] != projection.shape[0]:
        raise ValueError(f"descriptors {descriptors.shape} and projection {projection.shape} do not fit")
    return np.packbits(np.asarray(descriptors, np.float32) @ np.asarray(projection, np.float32) > 0, axis=-1)


def unpack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """(..., bits / 8) uint8 -> (..., bits) float32 in {-1, +1}."""
    return np.unpackbits(codes, axis=-1, count=bits).astype(np.float32) * 2.0 - 1.0
