"""A FAISS inner-product index over region descriptors, with optional PCA-whitening.

Vectors go through ``L2 -> PCA-whiten -> L2`` (PROTOCOLS.md sec. 1) before they are
indexed, and queries go through the same transform, so the inner product is the
cosine similarity of the (whitened) descriptors. The index type is a FAISS factory
string ("Flat" = exact, "IVF1024,PQ32", "HNSW32", ...).

On disk an index is a folder, written atomically::

    index.faiss     the FAISS index
    whitening.npz   the whitening (only when one is used)
    index.json      what produced it: factory, parameters, dims, store hash, versions
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import faiss
import numpy as np

from claid.artifacts import schema_version
from claid.index.faiss_factory import (
    check_vectors,
    choose_factory,
    make_faiss_index,
    subsample,
)
from claid.index.whitening import (
    cap_whitening_dim,
    file_sha256,
    fit_pca_whitening,
    l2_normalize,
    load_whitening,
    whiten_and_normalize,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = schema_version("index")
WHITENING_KINDS = ("none", "database", "file")


class RegionIndex:
    """Region vectors searchable by inner product after the protocol's transform.

    Build with ``RegionIndex.build(vectors, **cfg)`` (or ``build_index``), or in two
    steps for stores that do not fit in memory: ``RegionIndex.train(sample, **cfg)``
    then ``.add(block)`` per block. Ids are the row numbers of the added vectors, in
    the order they were added.
    """

    def __init__(self, faiss_index: faiss.Index, whitening: dict | None, meta: dict) -> None:
        self.faiss_index = faiss_index
        self.whitening = whitening
        self.meta = meta
        #: an ``index.faiss`` already written for this index by a streamed flat build
        #: (:mod:`claid.index.flat_file`), which ``save`` moves into the index dir
        self.pending_file: Path | None = None
        #: the inverted lists' data file of an on-disk IVF index
        #: (:mod:`claid.index.ondisk_build`), which ``save`` moves into the index dir
        self.pending_lists: Path | None = None
        #: True when the flat vectors (or an IVF index's on-disk lists) are
        #: memory-mapped from a file (read-only: FAISS aborts the process on an add to
        #: a mapped index, so ``add`` refuses first)
        self.mapped = False

    # ------------------------------------------------------------------ build
    @classmethod
    def train(
        cls,
        training_vectors: np.ndarray,
        *,
        factory: str = "Flat",
        whitening: str = "none",
        whitening_file: str | os.PathLike | None = None,
        whitening_dim: int | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        refine_factor: int | None = None,
        train_size: int | None = None,
        seed: int = 0,
        fallback: str | None = "Flat",
        store_hash: str = "",
    ) -> RegionIndex:
        """An empty, trained index: fits the whitening and trains FAISS on a sample.

        Args:
            training_vectors: (N, D) float32 L2-normalised vectors (the database or a
                sample of it); ``train_size`` rows are drawn from it (seeded).
            factory: FAISS factory string, metric is always inner product.
            whitening: "none"; "database" (PCA-whitening fitted on the training
                vectors); or "file" (loaded from ``whitening_file``).
            whitening_file: .npz from ``save_whitening`` (with ``whitening="file"``).
            whitening_dim: output dimension of a database whitening; None keeps every
                direction with variance. For "file" it must be None or equal the file's.
            nprobe: IVF cells visited per query (IVF factories only; None = FAISS default).
            ef_search: HNSW search breadth (HNSW factories only; None = FAISS default).
            refine_factor: a ``...,Refine(...)`` factory re-ranks ``refine_factor * k``
                candidates with its finer codes (None = FAISS default, 1).
            train_size: rows used to fit the whitening and train FAISS; None = all.
            seed: seed of the training subsample and of FAISS k-means.
            fallback: factory used when there are too few training vectors for
                ``factory`` (logged and recorded in ``meta["fallback"]``); None raises.
            store_hash: identifies the region store the index is built from (recorded).
        Returns:
            an empty RegionIndex ready for ``add``.
        """
        training_vectors = check_vectors(training_vectors, "training vectors")
        dim_in = int(training_vectors.shape[1])
        if whitening not in WHITENING_KINDS:
            raise ValueError(f"whitening must be one of {WHITENING_KINDS}, got {whitening!r}")
        if whitening == "file" and whitening_file is None:
            raise ValueError('whitening="file" needs whitening_file (a .npz from save_whitening)')
        if whitening != "file" and whitening_file is not None:
            raise ValueError(
                f'whitening_file is only used with whitening="file", not {whitening!r}'
            )
        if whitening == "none" and whitening_dim is not None:
            raise ValueError('whitening_dim needs whitening="database" or "file"')
        started = time.perf_counter()
        sample = subsample(training_vectors, train_size, seed)
        # a drawn subsample is this function's own: normalised in place (no 2nd copy)
        unit_sample = l2_normalize(sample, what="training vectors",
                                   overwrite=sample is not training_vectors)
        # the fallback is decided from the number of vectors before any fitting: a
        # collection too small for `factory` is also too small for its whitening_dim
        used_factory, fallback_info = choose_factory(
            factory, fallback, sample.shape[0], whitening_dim or dim_in)

        white: dict | None = None
        whitening_info: dict = {"kind": whitening}
        if whitening == "file":
            white = load_whitening(whitening_file)
            if white["mean"].shape[0] != dim_in:
                raise ValueError(
                    f"whitening file {whitening_file} expects dimension {white['mean'].shape[0]}, "
                    f"the vectors have {dim_in}"
                )
            if whitening_dim is not None and whitening_dim != white["proj"].shape[1]:
                raise ValueError(
                    f"whitening_dim={whitening_dim} but {whitening_file} projects to "
                    f"{white['proj'].shape[1]}"
                )
            whitening_info.update(
                file=str(whitening_file),
                file_sha256=file_sha256(whitening_file),
                fitted_on=white["fitted_on"],
            )
        elif whitening == "database":
            if sample.shape[0] == 0:
                # An empty store has nothing to fit; searching it returns nothing anyway.
                log.warning("empty database: PCA-whitening skipped, index left unwhitened")
                whitening_info.update(skipped="empty database")
            else:
                white = fit_pca_whitening(
                    unit_sample, dim=None if fallback_info else whitening_dim,
                    fitted_on=store_hash or "database",
                )
                if fallback_info:
                    white = cap_whitening_dim(white, whitening_dim, whitening_info)
        if white is not None:
            whitening_info.update(dim=int(white["proj"].shape[1]), n_fit=white["n_fit"])
        train_points = whiten_and_normalize(unit_sample, white) if white else unit_sample
        dim = int(white["proj"].shape[1]) if white else dim_in

        faiss_index = make_faiss_index(dim, used_factory)
        if not faiss_index.is_trained:
            ivf = faiss.try_extract_index_ivf(faiss_index)
            if ivf is not None:
                ivf.cp.seed = seed
            faiss_index.train(train_points)

        meta = {
            "schema_version": SCHEMA_VERSION,
            "metric": "inner_product",
            "factory": used_factory,
            "requested_factory": factory,
            "fallback": fallback_info,
            "params": {
                "nprobe": nprobe,
                "ef_search": ef_search,
                "refine_factor": refine_factor,
                "train_size": train_size,
                "seed": seed,
            },
            "whitening": whitening_info,
            "dim_in": dim_in,
            "dim": dim,
            "n_train": int(train_points.shape[0]),
            "store_hash": store_hash,
            "train_seconds": round(time.perf_counter() - started, 3),
        }
        index = cls(faiss_index, white, meta)
        index.set_search_params(nprobe=nprobe, ef_search=ef_search, refine_factor=refine_factor)
        return index

    @classmethod
    def build(cls, vectors: np.ndarray, *, add_block: int = 16384, **cfg) -> RegionIndex:
        """Train on (a sample of) ``vectors`` and add all of them.

        Args:
            vectors: (N, D) float32 L2-normalised region vectors; N = 0 is allowed
                (an empty index whose searches return nothing).
            add_block: rows transformed and added at a time.
            **cfg: the keyword arguments of ``train``.
        Returns:
            the RegionIndex; region ids are the row numbers of ``vectors``.
        """
        started = time.perf_counter()
        vectors = check_vectors(vectors, "region vectors")
        index = cls.train(vectors, **cfg)
        for start in range(0, vectors.shape[0], add_block):
            index.add(vectors[start : start + add_block])
        index.meta["build_seconds"] = round(time.perf_counter() - started, 3)
        return index

    def add(self, vectors: np.ndarray) -> None:
        """Append (B, D) vectors; their ids continue from ``ntotal``."""
        if self.mapped:
            raise ValueError("this index's vectors are memory-mapped from its file (read-only); "
                             "load it with mmap=False to add to it")
        vectors = check_vectors(vectors, "region vectors")
        if vectors.shape[0]:
            self.faiss_index.add(self.transform(vectors))

    # ------------------------------------------------------------------ search
    @property
    def ntotal(self) -> int:
        """Number of indexed regions."""
        return int(self.faiss_index.ntotal)

    @property
    def dim_in(self) -> int:
        """Dimension D of the vectors given to ``add`` / ``search``."""
        return int(self.meta["dim_in"])

    @property
    def dim(self) -> int:
        """Dimension D' of the indexed (transformed) vectors."""
        return int(self.meta["dim"])

    @property
    def is_exact(self) -> bool:
        """True for a flat (brute-force) index: its search is exhaustive."""
        return isinstance(faiss.downcast_index(self.faiss_index), faiss.IndexFlat)

    def set_search_params(
        self,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        refine_factor: int | None = None,
    ) -> None:
        """Set IVF ``nprobe``, HNSW ``ef_search`` or the ``refine_factor`` of a
        ``Refine(...)`` factory (None leaves a value unchanged).

        A parameter the index type does not have is an error, except after a
        recorded fallback (the config was written for the requested factory).
        """
        inner = faiss.downcast_index(self.faiss_index)
        for name, value, holder, attribute in (
            ("nprobe", nprobe, faiss.try_extract_index_ivf(self.faiss_index), "nprobe"),
            ("ef_search", ef_search, self._hnsw(), "efSearch"),
            (
                "refine_factor",
                refine_factor,
                inner if hasattr(inner, "k_factor") else None,
                "k_factor",
            ),
        ):
            if value is None:
                continue
            if holder is None:
                if self.meta.get("fallback"):
                    continue
                raise ValueError(
                    f"{name}={value} does not apply to factory {self.meta['factory']!r}"
                )
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
            setattr(holder, attribute, int(value))
            self.meta["params"][name] = int(value)

    def _hnsw(self) -> faiss.HNSW | None:
        inner = faiss.downcast_index(self.faiss_index)
        return inner.hnsw if hasattr(inner, "hnsw") else None

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) -> (N, D') float32: L2 -> PCA-whiten -> L2 (L2 only without whitening).

        Raises:
            ValueError: on a wrong dimension, NaN/inf or all-zero rows.
        """
        vectors = check_vectors(vectors, "vectors")
        if vectors.shape[1] != self.dim_in:
            raise ValueError(f"index expects dimension {self.dim_in}, got {vectors.shape[1]}")
        return whiten_and_normalize(vectors, self.whitening)

    def search(self, queries: np.ndarray, k: int | None) -> tuple[np.ndarray, np.ndarray]:
        """The k most similar regions of each query.

        Args:
            queries: (Q, D) float query vectors (transformed like the database).
            k: regions per query; None = every region (exact indexes only).
        Returns:
            sims (Q, k) float32 descending, ids (Q, k) int64; where fewer than k
            regions were found the row is padded with id -1 and similarity -inf.
            With k=None the shape is (Q, ntotal).
        """
        if k is None:
            return self._search_all(queries)
        if int(k) < 1:
            raise ValueError(f"k must be >= 1 or None, got {k}")
        k = int(k)
        queries = self.transform(queries)
        n_q = queries.shape[0]
        k_found = min(k, self.ntotal)
        if not n_q or not k_found:
            return np.full((n_q, k), -np.inf, np.float32), np.full((n_q, k), -1, np.int64)
        found_sims, found_ids = self.faiss_index.search(queries, k_found)
        sims = np.where(found_ids >= 0, found_sims, np.float32(-np.inf))
        if k_found == k:  # nothing to pad beyond FAISS's own -1s (a query's usual path: no copies)
            return sims, found_ids
        pad = ((0, 0), (0, k - k_found))
        return np.pad(sims, pad, constant_values=-np.inf), np.pad(found_ids, pad, constant_values=-1)

    def database_vectors(self) -> np.ndarray:
        """(ntotal, D') float32 view of the indexed vectors (exact indexes only)."""
        if not self.is_exact:
            raise ValueError(
                f"factory {self.meta['factory']!r} stores compressed vectors; "
                "exhaustive search needs an exact 'Flat' index"
            )
        flat = faiss.downcast_index(self.faiss_index)
        n = self.ntotal
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim)

    def _search_all(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exhaustive ranking of every region: (Q, ntotal) sims and ids, descending."""
        from claid.index.exact_search import search_all_regions

        return search_all_regions(self.database_vectors(), self.transform(queries))

    # ------------------------------------------------------------------ disk
    def describe(self) -> dict:
        """The JSON record of what produced this index (schema, config, dims, versions)."""
        from claid._version import __version__

        return {
            **self.meta,
            "ntotal": self.ntotal,
            "claid_version": __version__,
            "faiss_version": faiss.__version__,
        }

    def nbytes(self) -> int:
        """Size of the FAISS index in bytes (a proxy for its memory): the code array
        of flat indexes, else the serialised index (which briefly needs that much more
        memory, so it is avoided for the big flat case)."""
        index = faiss.downcast_index(self.faiss_index)
        if isinstance(index, faiss.IndexFlatCodes):
            return int(index.ntotal) * int(index.code_size)
        return int(faiss.serialize_index(self.faiss_index).nbytes)

    def save(self, directory: str | os.PathLike, *, provenance: dict | None = None,
             overwrite: bool = False) -> Path:
        """Write the index folder atomically: :func:`claid.index.index_dir.save_index`."""
        from claid.index.index_dir import save_index

        return save_index(self, directory, provenance=provenance, overwrite=overwrite)

    @classmethod
    def load(cls, directory: str | os.PathLike, *, mmap: bool = False) -> RegionIndex:
        """Read an index folder: :func:`claid.index.index_dir.load_index` (``mmap``:
        a flat index's vectors stay in the file, read through the page cache)."""
        from claid.index.index_dir import load_index

        return load_index(directory, mmap=mmap, index_class=cls)
