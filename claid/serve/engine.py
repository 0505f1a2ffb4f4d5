"""What ``claid serve`` searches with: one index dir, loaded once, shared by every request.

* The FAISS index is memory-mapped (``RegionIndex.load(mmap=True)``), the region store
  is memory-mapped by :class:`~claid.store.RegionStore`; a request reads them, never
  copies them.
* The descriptor's record is checked at start; its network is built once, under a
  lock, by ``claid serve`` at start (so a record or weights it cannot use stop the
  server in one line) or, from Python, on the first query that needs it; queries that run it go through a bounded pool of ``workers`` threads (one on
  a 2-core machine), each forward using ``threads`` torch / BLAS / FAISS threads
  (:func:`claid.threads.apply_threads`), and at most ``queue`` such requests wait:
  a burst beyond that is answered 503 at once instead of piling up in memory.
* Query vectors are described exactly as ``python -m claid search`` describes them
  (:func:`claid.retrieval.query_vector`), whole-image and box queries of database
  images cached per (image, box) in a bounded LRU.
* Ranking is the index package's (``RegionIndex.search`` + ``rank_images``' rule over
  the ``k`` found regions, :func:`claid.index.first_appearances`, or the exhaustive
  ``search_images`` when ``k`` is None, as the CLI), so results equal the CLI's; the
  region that localised each result is read from the same search. Searches run one
  at a time on one search thread, beside the event loop (no network: no pool slot).
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np


def cap_malloc_arenas(arenas: int = 2) -> None:
    """glibc: at most ``arenas`` malloc arenas (a new thread otherwise gets its own
    64 MiB arena, and the resident memory of a server grows with every thread the
    thread pools start). A no-op where the C library is not glibc."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(-8, int(arenas))  # M_ARENA_MAX


def trim_malloc() -> None:
    """Hand freed heap pages back to the system (after a forward's large temporaries)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _glibc():
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


class ApiError(Exception):
    """A request claid serve refuses: ``status`` (4xx/5xx) and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = " ".join(str(message).split())


#: Largest ``top`` (images per answer) and ``k`` (regions retrieved) a request may ask.
MAX_TOP = 1000
MAX_K = 100_000
DEFAULT_APPROX_K = 1000  # regions retrieved on a compressed index (the ivfpq / hnsw presets' k)
CACHE_SIZE = 4096  # cached database query vectors (dim x 4 B each)
PREFIX_K = 100  # regions searched first for a k-region query (SearchEngine.rank)


def _int_param(name: str, value, *, least: int, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{name} must be an integer, got {value!r}")
    if not least <= value <= most:
        raise ApiError(400, f"{name} must be in [{least}, {most}], got {value}")
    return value


class SearchEngine:
    """The index dir's index, search table, store and (lazily) descriptor."""

    def __init__(self, index_dir: str | Path, *, store_dir: str | Path | None = None,
                 workers: int = 1, queue: int = 32, threads: int | str | None = "auto") -> None:
        from claid.index import RegionIndex
        from claid.index.search_table import load_search_table
        from claid.retrieval import checked_meta, recorded_descriptor_class
        from claid.threads import apply_threads

        self.index_dir = Path(index_dir)
        self.meta = checked_meta(index_dir)  # claid verify's one-line errors, no checksums
        # a record naming no registered class stops the server now (RecordedDescriptorError),
        # not every image query later
        self.descriptor_class = recorded_descriptor_class(self.meta, index_dir)
        self.index = RegionIndex.load(index_dir, mmap=True)
        _, self.region_image, self.region_boxes = load_search_table(index_dir)
        self.image_ids: list[str] = list(self.meta.get("image_ids", []))
        self.image_number = {image_id: i for i, image_id in enumerate(self.image_ids)}
        self._by_image = np.argsort(self.region_image, kind="stable")  # rows of each image
        self._image_bounds = np.searchsorted(self.region_image[self._by_image],
                                             np.arange(len(self.image_ids) + 1))
        self.store = self.table = None
        if store_dir is not None:
            self._open_store(store_dir)
        self.threads = apply_threads(threads)
        self.workers, self.queue = int(workers), int(queue)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="claid-forward")
        # one search thread: FAISS releases the GIL, so a search overlaps the event loop's
        # parsing of the next requests on the other core (16 clients at 1M regions:
        # 700 req/s against 520 inline; bench_serve); searches queue, never oversubscribe
        self._search_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="claid-search",
                                               initializer=apply_threads, initargs=(self.threads,))
        self._waiting = threading.BoundedSemaphore(self.workers + self.queue)
        self._descriptor = None
        self._descriptor_lock = threading.Lock()
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.text_capable = hasattr(self.descriptor_class, "encode_text")

    def _open_store(self, store_dir) -> None:
        from claid.artifacts import DamagedArtifactError
        from claid.index.search_table import RegionTable
        from claid.store import RegionStore

        store = RegionStore.open(str(store_dir))
        if list(store.image_ids) != self.image_ids:
            raise DamagedArtifactError(f"region store {store_dir} holds other images than index dir "
                                       f"{self.index_dir}; pass the store the index was built from")
        extra = store.whole_image_rows() if self.index.ntotal > store.num_regions else None
        self.store = store
        self.table = RegionTable(store, extra, self.region_image, self.region_boxes,
                                 self.image_ids, int(store.dim))
        self.first_region = np.concatenate([[0], np.cumsum(store.region_counts())]).astype(np.int64)

    # -- the network

    @property
    def descriptor_loaded(self) -> bool:
        return self._descriptor is not None

    def descriptor(self):
        """The recorded descriptor, built once (the first caller builds, others wait).

        Raises:
            RecordedDescriptorError: it cannot be built (a nested record that is not
                claid's, weights that are not cached, a setting the class refuses), one line.
        """
        if self._descriptor is None:
            with self._descriptor_lock:
                if self._descriptor is None:
                    self._descriptor = self._build_descriptor()
        return self._descriptor

    def _build_descriptor(self):
        from claid.config.registered import RecordedDescriptorError
        from claid.models.weights import WeightsUnavailableError
        from claid.retrieval import descriptor_where, recorded_descriptor

        try:
            return recorded_descriptor(self.meta, self.index_dir)
        except RecordedDescriptorError:
            raise
        except (WeightsUnavailableError, TypeError, ValueError, OSError) as err:
            message = " ".join(str(err).split())
            raise RecordedDescriptorError(f"{descriptor_where(self.index_dir)}: cannot build it "
                                          f"({type(err).__name__}: {message[:300]})") from None

    def run_network(self, fn) -> Future:
        """Submit ``fn`` (which runs the descriptor) to the bounded pool; 503 when
        ``workers + queue`` such requests are already in."""
        if not self._waiting.acquire(blocking=False):
            raise ApiError(503, f"busy: {self.workers + self.queue} network queries in flight; retry")
        future = self._pool.submit(fn)
        future.add_done_callback(lambda _: self._waiting.release())
        return future

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._search_pool.shutdown(wait=False, cancel_futures=True)

    # -- query vectors

    def cached(self, key: tuple) -> np.ndarray | None:
        with self._cache_lock:
            vector = self._cache.get(key)
            if vector is not None:
                self._cache.move_to_end(key)
            return vector

    def remember(self, key: tuple, vector: np.ndarray) -> None:
        with self._cache_lock:
            self._cache[key] = vector
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)

    def image_query_vector(self, image, box, where: str) -> np.ndarray:
        """The CLI's query vector of an image (+ box); runs the network (use the pool)."""
        from claid.retrieval import QueryError, query_vector

        descriptor = self.usable_descriptor()
        try:
            return np.asarray(query_vector(descriptor, image, box, where=where), np.float32)
        except QueryError as err:
            raise ApiError(400, str(err)) from None

    def text_vector(self, text: str) -> np.ndarray:
        return np.asarray(self.usable_descriptor().encode_text([text])[0], np.float32)

    def usable_descriptor(self):
        """:meth:`descriptor`, a build failure answered 503 with its one line (the
        command line builds it at start, so there it stops the server instead)."""
        from claid.config.registered import RecordedDescriptorError

        try:
            return self.descriptor()
        except RecordedDescriptorError as err:
            raise ApiError(503, f"this server cannot describe queries: {err}") from None

    def region_vector(self, region_id) -> np.ndarray:
        """The stored vector of index row ``region_id`` (the store's, no network)."""
        region_id = _int_param("region_id", region_id, least=0, most=max(0, self.index.ntotal - 1))
        if self.table is None:
            raise ApiError(400, "region_id queries need the region store: start claid serve with "
                                "--run-dir or --store")
        if region_id < self.table.store_rows:  # one memory-mapped row, no shard copied
            return np.asarray(self.store.vector(region_id), np.float32)
        return self.table.gather(np.array([region_id]))[0]

    # -- ranking

    def check_top_k(self, top, k) -> tuple[int, int | None]:
        top = _int_param("top", top, least=1, most=MAX_TOP)
        if k is not None:
            k = _int_param("k", k, least=1, most=MAX_K)
        elif not self.index.is_exact:
            k = DEFAULT_APPROX_K  # a compressed index cannot rank every region
        return top, k

    def search(self, vector: np.ndarray, *, top: int, k: int | None) -> Future:
        """:meth:`rank` on the search thread (its FAISS / BLAS thread count set there)."""
        return self._search_pool.submit(self.rank, vector, top=top, k=k)

    def rank(self, vector: np.ndarray, *, top: int, k: int | None) -> list[dict]:
        """One query vector -> the first ``top`` images: score, box, matching region."""
        from claid.index import first_appearances, search_images

        query = np.asarray(vector, np.float32).reshape(1, -1)
        if k is None:  # exhaustive, as the CLI's default
            (ranking,) = search_images(self.index, query, self.region_image, self.region_boxes,
                                       self.image_ids, ["0"], k=None)
            regions = self._best_regions_exact(query, ranking.images[:top])
            return [self._result(i, region, score) for i, (region, score) in
                    enumerate(zip(regions, ranking.scores[:top].tolist()))]
        # The first PREFIX_K (or 10 x top) regions first: when they already hold ``top``
        # images, or every positive region, those images are the k search's (the ranking
        # walks the regions best first; a FAISS search for fewer regions returns the
        # prefix of the longer one), for a third less time at 1M regions (bench_serve).
        small = min(k, max(PREFIX_K, 10 * top))
        sims, ids = self.index.search(query, small)
        regions, scores = first_appearances(sims[0], ids[0], self.region_image, top)
        if small < k and len(regions) < top and ids[0, -1] >= 0 and sims[0, -1] > 0:
            sims, ids = self.index.search(query, k)  # the prefix fell short
            regions, scores = first_appearances(sims[0], ids[0], self.region_image, top)
        return [self._result(i, region, score) for i, (region, score) in
                enumerate(zip(regions.tolist(), scores.tolist()))]

    def _result(self, i: int, region: int, score: float) -> dict:
        number = int(self.region_image[region])
        return {"rank": i + 1, "image_id": self.image_ids[number], "image_index": number,
                "score": score, "box": self.region_boxes[region].tolist(), "region_id": region}

    def _best_regions_exact(self, query, images: list[str]) -> list[int]:
        if not images:
            return []
        database = self.index.database_vectors()
        q = self.index.transform(query)[0]
        out = []
        for image_id in images:
            number = self.image_number[image_id]
            rows = self._by_image[self._image_bounds[number]:self._image_bounds[number + 1]]
            out.append(int(rows[np.argmax(database[rows] @ q)]))
        return out

    def timed(self, fn):
        start = time.perf_counter()
        try:
            value = fn()
            return value, round((time.perf_counter() - start) * 1000, 3)
        finally:
            trim_malloc()  # the forward's activations: freed, and given back
