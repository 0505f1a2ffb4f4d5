"""PCA-whitening of region descriptors, as pure numpy functions.

The paper's lab (PROTOCOLS.md sec. 1) L2-normalises the vectors, PCA-whitens them
(``whiten=True``) with a PCA fitted on the regions of *another* dataset, and
L2-normalises again. A whitening is a plain dict of arrays so that it can be fitted
on one dataset, saved to ``.npz`` and loaded for another::

    {"mean": (D,) float32, "proj": (D, D') float32, "eigvals": (D',) float64,
     "n_fit": int, "fitted_on": str}

``apply_whitening(x) = (x - mean) @ proj`` with ``proj[:, j] = v_j / sqrt(lambda_j + eps)``
(``v_j`` the j-th principal direction, ``lambda_j`` its variance), i.e. what
scikit-learn's ``PCA(whiten=True).transform`` computes, without the L2 steps.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from claid.artifacts import atomic_save_npz

log = logging.getLogger(__name__)

#: Eigenvalues below ``RANK_RTOL * largest`` are treated as zero variance: whitening
#: them would multiply floating-point noise by ~1e4 or more.
RANK_RTOL = 1e-6

#: Rows whose norms are computed at a time (the squares are a temporary of that size).
NORM_BLOCK = 4096
#: Rows whitened at a time by ``whiten_and_normalize`` (4096 x 2048 x 4 B = 32 MiB a temporary).
TRANSFORM_BLOCK = 4096
#: Rows centred at a time while the covariance is accumulated.
COVARIANCE_BLOCK = 4096

_KEYS = ("mean", "proj", "eigvals", "n_fit", "fitted_on")


def l2_normalize(vectors: np.ndarray, *, what: str = "vectors",
                 overwrite: bool = False) -> np.ndarray:
    """Rows scaled to unit L2 norm.

    Args:
        vectors: (N, D) float array.
        what: name used in error messages.
        overwrite: a float32 ``vectors`` may be normalised in place (the caller
            gives it away). Input of another dtype is converted into a new array,
            which is then normalised in place anyway: one float32 array at a time.
    Returns:
        (N, D) float32, unit rows.
    Raises:
        ValueError: on NaN/inf entries or all-zero rows (they have no direction).
    """
    return _unit_rows(vectors, what, overwrite, 0)


def _unit_rows(vectors, what: str, overwrite: bool, first_row: int) -> np.ndarray:
    """``l2_normalize``; errors name rows counted from ``first_row`` (a block's start)."""
    converted = np.asarray(vectors, dtype=np.float32)
    owned = overwrite or (converted is not vectors and not (
        isinstance(vectors, np.ndarray) and np.may_share_memory(converted, vectors)))
    vectors = converted
    if vectors.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (N, D) array, got shape {vectors.shape}")
    norms = _one_block_norms(vectors) if vectors.shape[0] <= NORM_BLOCK else None
    if norms is None:
        norms = _checked_norms(vectors, what, first_row)
    if owned and vectors.flags.writeable:
        vectors /= norms
        return vectors
    return vectors / norms


def _one_block_norms(vectors: np.ndarray) -> np.ndarray | None:
    """(N, 1) row norms of one block (np.linalg.norm's own sqrt(add.reduce(x*x))), or
    None when one is not finite or zero: then :func:`_checked_norms` says what is wrong.
    A finite, non-zero norm needs no entry check, so a query row costs two numpy calls."""
    norms = np.sqrt(np.add.reduce(vectors * vectors, axis=1, keepdims=True))
    return norms if np.isfinite(norms).all() and norms.all() else None


def _checked_norms(vectors: np.ndarray, what: str, first_row: int) -> np.ndarray:
    """(N, 1) row norms, a block at a time (np.isfinite and np.linalg.norm would each
    make an (N, D) temporary); ValueError naming NaN/inf or all-zero rows."""
    finite = np.empty(vectors.shape[0], dtype=bool)
    norms = np.empty((vectors.shape[0], 1), dtype=np.float32)
    for start in range(0, vectors.shape[0], NORM_BLOCK):
        rows = vectors[start : start + NORM_BLOCK]
        finite[start : start + NORM_BLOCK] = np.isfinite(rows).all(axis=1)
        norms[start : start + NORM_BLOCK] = np.linalg.norm(rows, axis=1, keepdims=True)
    if not finite.all():
        bad = np.flatnonzero(~finite) + first_row
        raise ValueError(
            f"{what} contain NaN or inf in {bad.size} rows (first: {bad[:5].tolist()})"
        )
    if np.any(norms == 0):
        bad = np.flatnonzero(norms[:, 0] == 0) + first_row
        raise ValueError(
            f"{what} contain {bad.size} all-zero rows (first: {bad[:5].tolist()}); "
            "a zero vector has no direction to search with"
        )
    return norms


def fit_pca_whitening(
    vectors: np.ndarray,
    dim: int | None = None,
    eps: float = 1e-9,
    *,
    fitted_on: str = "",
    block: int | None = None,
) -> dict:
    """Fit a PCA-whitening on (already L2-normalised) vectors.

    The covariance is accumulated over row blocks, so N can be large.

    Args:
        vectors: (N, D) float vectors, N >= 2.
        dim: output dimension D' (the D' directions of largest variance). None keeps
            every direction with non-zero variance (``lambda > RANK_RTOL * lambda_max``),
            i.e. at most min(D, N - 1).
        eps: added to each variance before the inverse square root (numerical floor).
        fitted_on: free text recorded with the whitening (dataset / store it came from).
        block: rows per covariance block (None: :data:`COVARIANCE_BLOCK`).
    Returns:
        dict with ``mean`` (D,) float32, ``proj`` (D, D') float32, ``eigvals`` (D',)
        float64 (descending), ``n_fit`` and ``fitted_on``.
    Raises:
        ValueError: on N < 2, non-finite input, or ``dim`` larger than the number of
            directions the data has variance in.
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"whitening needs (N, D) vectors, got shape {vectors.shape}")
    n, d = vectors.shape
    if n < 2:
        raise ValueError(f"PCA-whitening needs at least 2 vectors to fit, got {n}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    block = int(block or COVARIANCE_BLOCK)
    mean = vectors.mean(axis=0, dtype=np.float64)
    # float64 sums of float32 values cannot overflow: the mean is finite exactly when
    # every entry is (checked without an (N, D) mask)
    if not np.all(np.isfinite(mean)):
        raise ValueError("PCA-whitening input contains NaN or inf")
    cov = np.zeros((d, d), dtype=np.float64)
    for start in range(0, n, block):
        # Centre in float64, multiply in float32 (twice the BLAS speed; the relative
        # error ~1e-6 is far below RANK_RTOL), accumulate the blocks in float64.
        centred = (vectors[start : start + block].astype(np.float64) - mean).astype(np.float32)
        cov += centred.T @ centred
    cov /= n - 1
    eigvals, eigvecs = np.linalg.eigh(cov)  # ascending
    eigvals, eigvecs = eigvals[::-1], eigvecs[:, ::-1]
    rank = int(np.sum(eigvals > RANK_RTOL * max(eigvals[0], 0.0))) if eigvals[0] > 0 else 0
    if dim is None:
        dim = rank
    if not 1 <= dim <= rank:
        raise ValueError(
            f"whitening dim={dim} impossible: the {n} fitting vectors of dimension {d} have "
            f"variance in only {rank} directions (need 1 <= dim <= {rank}); fit on more "
            "vectors or ask for a smaller dim"
        )
    # Fix each direction's sign (largest-magnitude entry positive) so that two fits
    # of the same data give the same projection.
    vecs = eigvecs[:, :dim]
    signs = np.sign(vecs[np.argmax(np.abs(vecs), axis=0), np.arange(dim)])
    vecs = vecs * signs
    proj = vecs / np.sqrt(eigvals[:dim] + eps)
    return {
        "mean": mean.astype(np.float32),
        "proj": proj.astype(np.float32),
        "eigvals": eigvals[:dim].copy(),
        "n_fit": int(n),
        "fitted_on": str(fitted_on),
    }


def check_whitening(whitening: dict) -> None:
    """Raise ValueError unless ``whitening`` has the keys and shapes described above."""
    missing = [k for k in ("mean", "proj") if k not in whitening]
    if missing:
        raise ValueError(f"whitening is missing {missing}; expected keys {_KEYS}")
    mean, proj = np.asarray(whitening["mean"]), np.asarray(whitening["proj"])
    if mean.ndim != 1 or proj.ndim != 2 or proj.shape[0] != mean.shape[0]:
        raise ValueError(
            f"whitening shapes do not fit: mean {mean.shape}, proj {proj.shape} "
            "(expected (D,) and (D, D'))"
        )


def apply_whitening(vectors: np.ndarray, whitening: dict) -> np.ndarray:
    """Centre and project: ``(vectors - mean) @ proj``, no normalisation.

    Args:
        vectors: (N, D) float vectors.
        whitening: from ``fit_pca_whitening`` or ``load_whitening``.
    Returns:
        (N, D') float32.
    """
    check_whitening(whitening)
    vectors = np.asarray(vectors, dtype=np.float32)
    d = whitening["mean"].shape[0]
    if vectors.ndim != 2 or vectors.shape[1] != d:
        raise ValueError(
            f"whitening was fitted on dimension {d}, got vectors of shape {vectors.shape}"
        )
    return (vectors - whitening["mean"]) @ whitening["proj"]


def whiten_and_normalize(vectors: np.ndarray, whitening: dict | None, *,
                         block: int | None = None) -> np.ndarray:
    """The full protocol transform: L2 -> PCA-whiten -> L2 (PROTOCOLS.md sec. 1).

    With ``whitening=None`` only the first L2 step is done. Rows are transformed
    ``block`` at a time into the output, so the only full-size array is the output
    (a 100k x 2048 training sample is not copied twice on its way to 256-D).

    Args:
        vectors: (N, D) float vectors.
        whitening: a whitening dict or None.
        block: rows transformed at a time (None: :data:`TRANSFORM_BLOCK`).
    Returns:
        (N, D') float32 unit rows (D' = D without whitening).
    """
    vectors = np.asarray(vectors)
    block = int(block or TRANSFORM_BLOCK)
    if whitening is None:
        return l2_normalize(vectors)
    check_whitening(whitening)
    if vectors.ndim != 2 or vectors.shape[0] <= block:
        return l2_normalize(apply_whitening(l2_normalize(vectors), whitening),
                            what="whitened vectors", overwrite=True)
    out = np.empty((vectors.shape[0], np.asarray(whitening["proj"]).shape[1]), dtype=np.float32)
    for start in range(0, vectors.shape[0], block):
        unit = _unit_rows(vectors[start : start + block], "vectors", False, start)
        out[start : start + unit.shape[0]] = _unit_rows(
            apply_whitening(unit, whitening), "whitened vectors", True, start)
    return out


def save_whitening(path: str | os.PathLike, whitening: dict) -> Path:
    """Write a whitening to ``path`` (.npz), atomically (:mod:`claid.artifacts`).

    Returns:
        the path written.
    """
    check_whitening(whitening)
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"whitening files are .npz, got {path}")
    atomic_save_npz(
        path,
        mean=np.asarray(whitening["mean"], dtype=np.float32),
        proj=np.asarray(whitening["proj"], dtype=np.float32),
        eigvals=np.asarray(whitening.get("eigvals", np.zeros(0)), dtype=np.float64),
        n_fit=np.int64(whitening.get("n_fit", -1)),
        fitted_on=np.str_(whitening.get("fitted_on", "")),
    )
    return path


def load_whitening(path: str | os.PathLike) -> dict:
    """Read a whitening written by ``save_whitening``.

    Raises:
        FileNotFoundError: with what to do when the file is missing.
        ValueError: when the file lacks the expected arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"whitening file {path} not found; fit one with claid.index.fit_pca_whitening "
            "on another dataset's region vectors and save it with save_whitening"
        )
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in _KEYS if k not in data.files]
        if missing:
            raise ValueError(f"{path} is not a claid whitening file (missing {missing})")
        whitening = {
            "mean": data["mean"].astype(np.float32),
            "proj": data["proj"].astype(np.float32),
            "eigvals": data["eigvals"].astype(np.float64),
            "n_fit": int(data["n_fit"]),
            "fitted_on": str(data["fitted_on"]),
        }
    check_whitening(whitening)
    return whitening


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (recorded so an index says which whitening it used)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cap_whitening_dim(white: dict, whitening_dim: int | None, info: dict) -> dict:
    """A whitening fitted with every direction, cut to ``whitening_dim`` directions, or
    kept whole (warned, recorded in ``info["dim_capped"]``) when the small collection
    of a fallback index has variance in fewer directions than asked."""
    rank = int(white["proj"].shape[1])
    if whitening_dim is None:
        return white
    if whitening_dim <= rank:
        return {**white, "proj": white["proj"][:, :whitening_dim].copy(),
                "eigvals": white["eigvals"][:whitening_dim].copy()}
    log.warning("whitening_dim=%d capped to %d: the fallback index's %d vectors have "
                "variance in only %d directions", whitening_dim, rank, white["n_fit"], rank)
    info["dim_capped"] = {"requested": int(whitening_dim), "used": rank}
    return white
