"""FAISS pieces the region index is made of: an inner-product index from a factory
string, the training points it needs, a seeded training sample."""

from __future__ import annotations

import logging

import faiss
import numpy as np

log = logging.getLogger(__name__)

#: FAISS warns below 39 training points per centroid; k-means with fewer gives poor
#: cells, so an index that cannot get them falls back (or fails, see ``fallback``).
MIN_POINTS_PER_CENTROID = 39


def check_vectors(vectors: np.ndarray, what: str) -> np.ndarray:
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (N, D) array, got shape {vectors.shape}")
    if vectors.shape[1] == 0:
        raise ValueError(f"{what} have dimension 0")
    return vectors


def subsample(vectors: np.ndarray, train_size: int | None, seed: int) -> np.ndarray:
    """A seeded random subset of ``train_size`` rows (all rows when None or larger)."""
    n = vectors.shape[0]
    if train_size is None or train_size >= n:
        return vectors
    if train_size < 1:
        raise ValueError(f"train_size must be >= 1 or None, got {train_size}")
    rows = np.sort(np.random.default_rng(seed).choice(n, size=train_size, replace=False))
    return vectors[rows]


def training_points_needed(faiss_index: faiss.Index) -> int:
    """Training vectors an untrained FAISS index needs for sound k-means:
    ``MIN_POINTS_PER_CENTROID`` x its largest codebook (IVF cells, PQ centroids);
    0 for indexes that need no training."""
    if faiss_index.is_trained:
        return 0
    sizes = [1]
    ivf = faiss.try_extract_index_ivf(faiss_index)
    if ivf is not None:
        sizes.append(ivf.nlist)
    inner = faiss.downcast_index(ivf if ivf is not None else faiss_index)
    if hasattr(inner, "pq"):
        sizes.append(inner.pq.ksub)
    return MIN_POINTS_PER_CENTROID * max(sizes)


def make_faiss_index(dim: int, factory: str) -> faiss.Index:
    try:
        faiss_index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise ValueError(
            f"FAISS cannot build factory {factory!r} for dimension {dim}: "
            f"{str(err).splitlines()[-1]}"
        ) from err
    # The factory turns on polysemous training for 8-bit PQ: it reorders the codes for
    # Hamming pre-filtering (polysemous_ht), which claid never uses, and it is most of
    # IVF-PQ's training time (measured: ~65 of 72 s for IVF256,PQ32 on 20k x 256).
    ivf = faiss.try_extract_index_ivf(faiss_index)
    inner = faiss.downcast_index(ivf if ivf is not None else faiss_index)
    if hasattr(inner, "do_polysemous_training"):
        inner.do_polysemous_training = False
    return faiss_index


def choose_factory(factory: str, fallback: str | None, n_train: int,
                   dim: int) -> tuple[str, dict | None]:
    """The FAISS factory to build for ``n_train`` training vectors of dimension ``dim``:
    ``factory``, or ``fallback`` when ``factory`` needs more training vectors.

    Returns:
        (factory used, None or ``{"requested", "reason"}`` when falling back).
    Raises:
        ValueError: too few vectors and no usable fallback.
    """
    needed = training_points_needed(make_faiss_index(dim, factory))
    if n_train >= needed:
        return factory, None
    reason = f"factory {factory!r} needs {needed} training vectors, {n_train} available"
    if fallback is None:
        raise ValueError(f"{reason}; use a smaller index or set fallback")
    if training_points_needed(make_faiss_index(dim, fallback)) > n_train:
        raise ValueError(f"{reason}, and fallback {fallback!r} needs training too")
    log.warning("%s: falling back to %r", reason, fallback)
    return fallback, {"requested": factory, "reason": reason}
