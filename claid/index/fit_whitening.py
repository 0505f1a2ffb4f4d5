"""Fit a PCA-whitening on one dataset's region store, for use on another.

The paper's lab whitens Instance-160/335 with a PCA fitted on INSTRE's regions and
INSTRE with Instance-160's (PROTOCOLS.md sec. 1). This writes such a file, for
``conf/index`` ``whitening=file whitening_file=<out.npz>``::

    python -m claid.index.fit_whitening outputs/cache/regions-<hash> instre_pca.npz
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from claid.index.whitening import fit_pca_whitening, l2_normalize, save_whitening

log = logging.getLogger(__name__)


def sample_rows(
    chunks: Iterable[tuple[int, np.ndarray]],
    n_total: int,
    train_size: int | None,
    seed: int = 0,
) -> np.ndarray:
    """A seeded uniform sample of rows from a store streamed in chunks.

    Args:
        chunks: ``(first row index, (n_c, D) array)`` in row order, covering
            ``n_total`` rows (``RegionStore.vector_chunks()``).
        n_total: number of rows over all chunks.
        train_size: rows to draw; None = all rows.
        seed: seed of the draw.
    Returns:
        (min(train_size, n_total), D) float32, in row order.
    """
    take = n_total if train_size is None else min(int(train_size), n_total)
    rows = np.sort(np.random.default_rng(seed).choice(n_total, size=take, replace=False))
    parts, seen, dim = [], 0, None
    for start, chunk in chunks:
        dim = chunk.shape[1]
        lo, hi = np.searchsorted(rows, [start, start + chunk.shape[0]])
        if hi > lo:
            parts.append(np.asarray(chunk[rows[lo:hi] - start], dtype=np.float32))
        seen = start + chunk.shape[0]
    if seen != n_total:
        raise ValueError(f"the chunks hold {seen} rows, expected {n_total}")
    if not parts:
        return np.zeros((0, dim or 0), dtype=np.float32)
    return np.concatenate(parts)


def fit_whitening_from_store(
    store_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    dim: int | None = None,
    train_size: int | None = None,
    seed: int = 0,
) -> Path:
    """Fit ``fit_pca_whitening`` on (a sample of) a region store and save it.

    Args:
        store_dir: a region store folder (``claid.store.RegionStore``).
        out: the .npz to write.
        dim: whitening output dimension (None: every direction with variance).
        train_size: regions sampled (seeded) for the fit; None = all of them.
        seed: seed of the sample.
    Returns:
        the path written; ``fitted_on`` in it names the store and its config hash.
    """
    from claid.store import RegionStore

    store = RegionStore.open(os.fspath(store_dir))
    sample = sample_rows(store.vector_chunks(), store.num_regions, train_size, seed)
    whitening = fit_pca_whitening(
        l2_normalize(sample, what="store vectors"),
        dim=dim,
        fitted_on=f"{Path(store_dir).name} (config {store.config_hash})",
    )
    log.info(
        "whitening %d -> %d fitted on %d of %d regions of %s",
        sample.shape[1],
        whitening["proj"].shape[1],
        sample.shape[0],
        store.num_regions,
        store_dir,
    )
    return save_whitening(out, whitening)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store_dir", help="region store of the dataset to fit on")
    parser.add_argument("out", help="the .npz to write")
    parser.add_argument("--dim", type=int, default=None, help="output dimension (default: full)")
    parser.add_argument("--train-size", type=int, default=None, help="regions sampled")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = fit_whitening_from_store(
            args.store_dir, args.out, dim=args.dim, train_size=args.train_size, seed=args.seed
        )
    except (ValueError, OSError) as err:  # not a store, too few regions, unwritable output
        sys.exit(f"error: {err}")
    print(path)


if __name__ == "__main__":
    main()
