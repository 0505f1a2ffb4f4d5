"""Building a region index from a table whose vectors stay in the store.

    build_from_table(table, **index settings) -> RegionIndex

Memory is bounded by the index plus one chunk, never by a float32 copy of the
collection:

* training (whitening fit, FAISS k-means) uses a seeded sample of ``train_size``
  rows gathered from the memory-mapped store, the same rows ``RegionIndex.build``
  would draw from the full array; with ``train_size = None`` the sample is every row
  up to :data:`MAX_TRAIN_ROWS` (more is refused as a float32 copy of the collection:
  logged, and recorded in ``index.json`` as ``train_sample``); an index that needs no
  training and no whitening fit reads no sample at all;
* a flat (exact) index is written chunk by chunk straight to its file when the
  caller names one (``flat_file``: the index stage does), and searched memory-mapped
  from it; else it is sized once for all rows and each transformed chunk is written
  into its storage in place: no normalised full copy and no second buffer while
  FAISS grows its vector;
* other indexes get the transformed chunks through ``add``, ``add_block`` rows at a time.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from pathlib import Path

import faiss
import numpy as np

from claid.index.flat_file import write_flat_index
from claid.index.region_index import RegionIndex

log = logging.getLogger(__name__)

#: Largest training sample drawn when ``train_size`` is None (100k x 2048 x 4 B = 800 MiB).
MAX_TRAIN_ROWS = 100_000


def training_rows(n_rows: int, train_size: int | None, seed: int) -> np.ndarray:
    """The sorted rows ``RegionIndex.train`` samples: all rows when ``train_size`` is
    None or >= n_rows, else a seeded choice of ``train_size`` rows."""
    if train_size is None or train_size >= n_rows:
        return np.arange(n_rows, dtype=np.int64)
    if train_size < 1:
        raise ValueError(f"train_size must be >= 1 or None, got {train_size}")
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=train_size, replace=False))


def _needs_sample(factory: str, whitening: str, dim: int) -> bool:
    """Whether training reads any vectors: a whitening fitted on the database, or a
    FAISS index that needs training."""
    if whitening == "database":
        return True
    try:
        return not faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT).is_trained
    except RuntimeError:
        return True  # let RegionIndex.train report the bad factory


def train_from_table(table, **cfg) -> RegionIndex:
    """An empty, trained index: :meth:`RegionIndex.train` on the seeded sample of
    ``table``'s rows that ``build_from_table`` uses (read in the stored dtype; none
    when nothing needs fitting). ``cfg``: the keyword arguments of ``RegionIndex.train``."""
    n, dim = table.n_rows, table.dim
    train_size, seed = cfg.get("train_size"), int(cfg.get("seed", 0))
    sample_note = None
    if _needs_sample(cfg.get("factory", "Flat"), cfg.get("whitening", "none"), dim) and n:
        if train_size is None and n > MAX_TRAIN_ROWS:
            log.warning("train_size is null and the table has %d rows: training on a seeded "
                        "sample of %d (set index.train_size to choose)", n, MAX_TRAIN_ROWS)
            train_size = MAX_TRAIN_ROWS
            sample_note = {"rows": MAX_TRAIN_ROWS, "of": n, "reason": "train_size null, capped"}
        # in the stored dtype (float16: half of float32); `train` converts it once
        sample = table.gather(training_rows(n, train_size, seed), dtype=table.stored_dtype)
    else:
        sample = np.zeros((0, dim), dtype=np.float32)  # dimension only: nothing to fit
    index = RegionIndex.train(sample, **{**cfg, "train_size": train_size})
    if sample_note:
        index.meta["train_sample"] = sample_note
    return index


def build_from_table(table, *, add_block: int = 16384, flat_file=None, **cfg) -> RegionIndex:
    """Train on a sample of ``table``'s rows and add all of them, chunk by chunk.

    Args:
        table: a :class:`~claid.index.search_table.RegionTable` (``n_rows``, ``dim``,
            ``vector_chunks(rows)``, ``gather(rows)``); rows are L2-normalised vectors.
        add_block: rows converted, transformed and added at a time.
        flat_file: for a flat (exact) index, a file to write it to chunk by chunk;
            the index then maps its vectors from that file (``pending_file``, moved
            into the index dir by ``save``) instead of holding them in memory.
        **cfg: the keyword arguments of ``RegionIndex.train``.
    Returns:
        the RegionIndex; region ids are the table's row numbers.
    """
    started = time.perf_counter()
    n = table.n_rows
    index = train_from_table(table, **cfg)
    flat = faiss.downcast_index(index.faiss_index)
    if (isinstance(flat, faiss.IndexFlat) and flat.metric_type == faiss.METRIC_INNER_PRODUCT
            and n and flat_file is not None):
        transformed = (index.transform(chunk) for _, chunk in table.vector_chunks(add_block))
        index.faiss_index = write_flat_index(flat_file, index.dim, n, transformed)
        index.pending_file, index.mapped = Path(flat_file), True
    elif isinstance(flat, faiss.IndexFlat) and n:
        _fill_flat(index, flat, table, add_block)
    else:
        for _, chunk in table.vector_chunks(add_block):
            index.add(chunk)
    if index.ntotal != n:
        raise RuntimeError(f"index holds {index.ntotal} rows after the build, the table {n}")
    index.meta["build_seconds"] = round(time.perf_counter() - started, 3)
    return index


def _fill_flat(index: RegionIndex, flat: faiss.IndexFlat, table, add_block: int) -> None:
    """Size the flat storage once for all rows and write each transformed chunk in place."""
    n, width = table.n_rows, index.dim
    flat.codes.resize(n * width * 4)
    storage = faiss.rev_swig_ptr(flat.get_xb(), n * width).reshape(n, width)
    for start, chunk in table.vector_chunks(add_block):
        storage[start : start + chunk.shape[0]] = index.transform(chunk)
    flat.ntotal = n


def build_index(vectors, *, flat_file: str | os.PathLike | None = None, **settings) -> RegionIndex:
    """What ``conf/index/*.yaml`` builds (its ``k`` is the search's): ``vectors`` is an
    (N, D) array (``RegionIndex.build``) or a :class:`~claid.index.search_table.RegionTable`,
    streamed from its store in chunks (:func:`build_from_table`).
    Takes exactly the keywords of ``RegionIndex.train`` and ``add_block`` (its
    signature says so, for the config check), and from the index stage (not a
    setting) ``flat_file``: where a flat index built from a table is written
    directly (:mod:`claid.index.flat_file`)."""
    if hasattr(vectors, "vector_chunks"):
        return build_from_table(vectors, flat_file=flat_file, **settings)
    if flat_file is not None:
        raise ValueError("flat_file needs a RegionTable (rows streamed from a store)")
    return RegionIndex.build(vectors, **settings)


def _build_index_signature() -> inspect.Signature:
    train = list(inspect.signature(RegionIndex.train).parameters.values())[1:]  # after training_vectors
    build = inspect.signature(RegionIndex.build).parameters
    head = [build["vectors"], build["add_block"]]
    return inspect.Signature(head + train, return_annotation=RegionIndex)


build_index.__signature__ = _build_index_signature()

