"""Synthetic token maps with planted objects, parts and repeated instances.

A stand-in for DINO last-layer tokens whose ground truth is known: background
"stuff" bands and small clutter blobs with low token energy, and elliptic objects
with higher energy (DINO's foreground tokens have larger norms), each object cut
into parts, and some objects sharing a class prototype (repeated instances, which
a bisection puts in the same half and getObject then separates). Used by the
tests and by ``experiments/bench_detector``.

Token model: every region r has a unit prototype p_r; a token is
``unit(p_r + noise * g / sqrt(D)) * energy`` with g ~ N(0, I). Two tokens of one
prototype then have cosine about ``1 / (1 + noise^2)``; prototypes share a common
direction with weight ``shared``, parts of an object and instances of a class are
perturbations of a parent prototype (``part_spread``, ``instance_spread``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class PlantedTokenMap:
    """A synthetic image's tokens and its ground truth.

    Attributes:
        tokens: (H*W, D) float32, row-major over the grid, un-normalised.
        grid: (H, W).
        object_masks: (K, H, W) bool, one per planted object (disjoint, 8-connected).
        object_class: (K,) int64, objects with equal class share a prototype.
        part_masks: (P, H, W) bool, the parts of the objects (disjoint).
        part_object: (P,) int64, index of the object each part belongs to.
        background_masks: (B, H, W) bool, the stuff bands (clutter not removed).
    """

    tokens: np.ndarray
    grid: tuple[int, int]
    object_masks: np.ndarray
    object_class: np.ndarray
    part_masks: np.ndarray
    part_object: np.ndarray
    background_masks: np.ndarray


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _prototype(rng: np.random.Generator, common: np.ndarray, shared: float) -> np.ndarray:
    own = _unit(rng.standard_normal(common.shape[0]))
    return _unit(np.sqrt(shared) * common + np.sqrt(1.0 - shared) * own)


def _perturb(rng: np.random.Generator, parent: np.ndarray, spread: float) -> np.ndarray:
    return _unit(parent + spread * _unit(rng.standard_normal(parent.shape[0])))


def _place_objects(
    rng: np.random.Generator,
    grid: tuple[int, int],
    n_objects: int,
    size_range: tuple[float, float],
    min_area: int,
) -> list[np.ndarray]:
    h, w = grid
    rows, cols = np.mgrid[0:h, 0:w]
    taken = np.zeros(grid, dtype=bool)
    placed: list[np.ndarray] = []
    for _ in range(200 * n_objects):
        if len(placed) == n_objects:
            break
        ry = rng.uniform(*size_range) * h
        rx = rng.uniform(*size_range) * w
        cy = rng.uniform(ry, h - ry)
        cx = rng.uniform(rx, w - rx)
        theta = rng.uniform(0, np.pi)
        dy, dx = rows - cy, cols - cx
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        mask = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
        # a one-patch gap keeps planted objects apart under 8-connectivity
        if mask.sum() < min_area or (ndimage.binary_dilation(mask, iterations=2) & taken).any():
            continue
        placed.append(mask)
        taken |= mask
    if len(placed) < n_objects:
        raise ValueError(
            f"could not place {n_objects} objects of relative size {size_range} on grid {grid}"
        )
    return placed


def _split_parts(rng: np.random.Generator, mask: np.ndarray, n_parts: int) -> list[np.ndarray]:
    """Slice an object into n_parts bands along a random direction, equal patch counts."""
    rows, cols = np.nonzero(mask)
    theta = rng.uniform(0, np.pi)
    projection = cols * np.cos(theta) + rows * np.sin(theta)
    order = np.argsort(projection, kind="stable")
    parts = []
    for chunk in np.array_split(order, n_parts):
        part = np.zeros_like(mask)
        part[rows[chunk], cols[chunk]] = True
        parts.append(part)
    return parts


def _background_bands(
    rng: np.random.Generator, grid: tuple[int, int], n_bands: int
) -> list[np.ndarray]:
    h, w = grid
    rows, cols = np.mgrid[0:h, 0:w]
    band = np.zeros(grid, dtype=np.int64)
    for k in range(1, n_bands):
        phase = rng.uniform(0, 2 * np.pi)
        edge = h * k / n_bands + 0.08 * h * np.sin(2 * np.pi * cols / w + phase)
        band += rows >= edge
    return [band == k for k in range(n_bands)]


def _clutter_blobs(
    rng: np.random.Generator, free: np.ndarray, n_blobs: int, size: tuple[int, int]
) -> list[np.ndarray]:
    h, w = free.shape
    blobs = []
    candidates = np.argwhere(free)
    for _ in range(n_blobs):
        if candidates.size == 0:
            break
        y, x = candidates[rng.integers(len(candidates))]
        blob = np.zeros_like(free)
        for _ in range(rng.integers(size[0], size[1] + 1)):
            blob[y, x] = True
            y = int(np.clip(y + rng.integers(-1, 2), 0, h - 1))
            x = int(np.clip(x + rng.integers(-1, 2), 0, w - 1))
        blobs.append(blob & free)
    return blobs


def planted_token_map(
    grid: tuple[int, int] = (22, 30),
    dim: int = 384,
    *,
    n_objects: int = 4,
    n_repeated: int = 2,
    parts_per_object: int = 2,
    n_background: int = 2,
    n_clutter: int = 6,
    object_size: tuple[float, float] = (0.1, 0.2),
    noise: float = 1.1,
    shared: float = 0.25,
    instance_spread: float = 0.3,
    part_spread: float = 1.0,
    object_energy: float = 2.0,
    energy_jitter: float = 0.15,
    seed: int = 0,
) -> PlantedTokenMap:
    """Generate one synthetic token map, deterministically from ``seed``.

    Args:
        grid: (H, W) patches; (45, 60) is ViT-B/8 at 360x480, (22, 30) ViT-S/16.
        dim: token dimension D.
        n_objects: planted objects K.
        n_repeated: the first ``n_repeated`` objects are instances of one class
            (0 or 1 for none).
        parts_per_object: bands each object is cut into (distinct prototypes).
        n_background: stuff bands splitting the background.
        n_clutter: small random-walk blobs (2-8 patches) in the background with
            their own prototypes and background energy.
        object_size: semi-axes of an object's ellipse as fractions of (H, W).
        noise: per-token noise; tokens of one prototype have cosine ~1/(1+noise^2).
        shared: weight of the direction common to all prototypes.
        instance_spread, part_spread: how far instances / parts stray from the
            class / object prototype.
        object_energy: norm of object tokens relative to background (1.0).
        energy_jitter: log-normal spread of every token's norm.
        seed: random seed.
    Returns:
        A PlantedTokenMap (tokens float32 (H*W, D) and the masks).
    Raises:
        ValueError: impossible settings (e.g. objects that do not fit the grid).
    """
    h, w = (int(g) for g in grid)
    if h < 4 or w < 4 or dim < 2:
        raise ValueError(f"grid {grid} and dim {dim} are too small for a planted map")
    if n_objects < 1 or parts_per_object < 1 or n_background < 1 or n_repeated > n_objects:
        raise ValueError(
            f"need n_objects >= 1, parts_per_object >= 1, n_background >= 1 and "
            f"n_repeated <= n_objects; got {n_objects}, {parts_per_object}, {n_background}, "
            f"{n_repeated}"
        )
    rng = np.random.default_rng(seed)
    common = _unit(rng.standard_normal(dim))
    objects = _place_objects(rng, (h, w), n_objects, object_size, min_area=4 * parts_per_object)
    object_class = np.array(
        [0 if k < max(n_repeated, 1) else k - max(n_repeated, 1) + 1 for k in range(n_objects)],
        dtype=np.int64,
    )
    class_prototypes = [_prototype(rng, common, shared) for _ in range(object_class.max() + 1)]

    region_of = np.full(h * w, -1, dtype=np.int64)  # patch -> prototype row
    prototypes: list[np.ndarray] = []
    energy = np.ones(h * w)
    bands = _background_bands(rng, (h, w), n_background)
    for band in bands:
        region_of[band.ravel()] = len(prototypes)
        prototypes.append(_prototype(rng, common, shared))
    anything = np.any(objects, axis=0)
    free = ~ndimage.binary_dilation(anything, iterations=1)
    for blob in _clutter_blobs(rng, free, n_clutter, (2, 8)):
        region_of[blob.ravel()] = len(prototypes)
        prototypes.append(_prototype(rng, common, shared))

    part_masks, part_object = [], []
    for k, mask in enumerate(objects):
        instance = _perturb(rng, class_prototypes[object_class[k]], instance_spread)
        for part in _split_parts(rng, mask, parts_per_object):
            region_of[part.ravel()] = len(prototypes)
            prototypes.append(_perturb(rng, instance, part_spread))
            part_masks.append(part)
            part_object.append(k)
        energy[mask.ravel()] = object_energy

    directions = np.stack(prototypes)[region_of]
    directions += noise * rng.standard_normal((h * w, dim)) / np.sqrt(dim)
    energy *= np.exp(energy_jitter * rng.standard_normal(h * w))
    tokens = (_unit(directions) * energy[:, None]).astype(np.float32)
    return PlantedTokenMap(
        tokens=tokens,
        grid=(h, w),
        object_masks=np.stack(objects),
        object_class=object_class,
        part_masks=np.stack(part_masks),
        part_object=np.asarray(part_object, dtype=np.int64),
        background_masks=np.stack(bands),
    )


def best_iou(truth_masks: np.ndarray, predicted_masks: np.ndarray) -> np.ndarray:
    """(K, H, W) ground truth and (R, H, W) predictions -> (K,) float64 best IoU of
    each truth mask over all predictions (0 when R = 0)."""
    truth = truth_masks.reshape(truth_masks.shape[0], -1).astype(np.float64)
    if predicted_masks.shape[0] == 0:
        return np.zeros(truth.shape[0])
    pred = predicted_masks.reshape(predicted_masks.shape[0], -1).astype(np.float64)
    inter = truth @ pred.T
    union = truth.sum(1)[:, None] + pred.sum(1)[None, :] - inter
    return (inter / np.maximum(union, 1)).max(axis=1)
