"""The index and search stages of a run: region table -> FAISS index dir -> rankings.

    index_stage(settings: IndexSettings, table, upstream, cache_dir) -> (RegionIndex, index dir)
    search_stage(index, table, query_vectors, queries, k, memory_gb) -> [Ranking]
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from claid.artifacts import clean_stale_temps, config_hash, file_lock, temp_path
from claid.config.rules import SettingsError, at_least, boolean, check_fields, positive, setting
from claid.index.search_table import RegionTable, save_search_table
from claid.structures import Ranking

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class IndexSettings:
    """What the index stage reads.

    Attributes:
        node: the ``index`` group without ``k``: the settings of
            :func:`claid.index.build_index` (``_target_`` + ``_partial_``).
        seed: the run's ``seed`` (training samples), unless the node sets its own.
        k: ``index.k``, regions retrieved per query (None: all, exact indexes only).
        descriptor: the ``descriptor`` node, recorded in the index dir (``search.json``)
            so that ``claid search`` describes new queries as the collection was.
    """

    node: dict
    seed: int = 0
    k: int | None = None
    descriptor: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SearchSettings:
    """The ``search`` group (what the search, baselines and report read), each range
    written once as its field's rule."""

    whole_image_region: bool = setting(False, boolean)
    global_baseline: bool = setting(True, boolean)
    shuffle_draws: int = setting(2000, at_least(1))
    memory_gb: float = setting(0.5, positive())
    max_memory_gb: float | None = setting(None, positive(optional=True))
    regions_per_image: int = setting(30, at_least(1))
    save_top: int = setting(100, at_least(1))

    def __post_init__(self) -> None:
        check_fields(self, "search")

    @classmethod
    def from_node(cls, node) -> SearchSettings:
        """From the ``search`` node (missing keys: the defaults); SettingsError on an
        unknown key or a value out of range."""
        values = dict(node or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SettingsError(f"search.{unknown[0]} is not a search setting; known: {', '.join(sorted(known))}")
        return cls(**values)


def index_stage(settings: IndexSettings, table: RegionTable, upstream: dict, cache_dir: Path):
    """Build (or load) the FAISS index over ``table``'s rows into ``index-<hash>``,
    streaming the vectors from the store (memory: the index plus one chunk). A flat
    index is written straight to its ``index.faiss`` and comes back memory-mapped
    from it (:mod:`claid.index.flat_file`; a reused one through
    :func:`claid.index.index_dir.load_index`), so an exact search holds no copy.

    Args:
        settings: the index preset, seed and descriptor record (:class:`IndexSettings`).
        table: the rows to index.
        upstream: what the rows were made from (goes into the key).
        cache_dir: where the index dir lives.
    Returns:
        (RegionIndex, index dir); the dir also holds the search table.
    """
    from claid.config.build import build

    node = settings.node
    params = {k: v for k, v in node.items() if not k.startswith("_")}
    params.setdefault("seed", int(settings.seed))
    key = {"upstream": upstream, "index": params}
    index_dir = cache_dir / f"index-{config_hash(key)}"
    clean_stale_temps(cache_dir)  # .index-*.tmp-* of builds killed part way
    with file_lock(cache_dir / f".{index_dir.name}.lock", what="building the index"):
        if (index_dir / "search.json").exists():
            clean_stale_temps(index_dir)  # a killed search-table write's temporaries
            index = _reusable_index(index_dir, key)
            if index is not None:
                return index, index_dir
        build_index = build(node)  # claid.index.build_index with the index settings
        # a flat index goes straight to a file (no 4 GiB in memory at INSTRE size);
        # a temporary name, cleaned if this process dies, moved into the dir by save
        flat_file = temp_path(cache_dir / f"{index_dir.name}.faiss")
        index = build_index(table, seed=params["seed"], flat_file=flat_file)
        # search.json is written last: a folder without it is an interrupted build, redone
        index.save(index_dir, provenance={"key": key}, overwrite=True)
        save_search_table(index_dir, table, descriptor=settings.descriptor, key=key)
    return index, index_dir


def _reusable_index(index_dir: Path, key: dict):
    """The index in ``index_dir`` when its files match their checksums and it was
    built from ``key``; else None, with a warning (the caller rebuilds it)."""
    from claid.index import RegionIndex
    from claid.index.index_dir_check import index_dir_problems

    problems = index_dir_problems(index_dir, key=key)
    if not problems:
        try:
            index = RegionIndex.load(str(index_dir), mmap=True)  # checksummed just now
            log.info("reusing index %s", index_dir)
            return index
        except (OSError, RuntimeError, ValueError) as err:  # faiss raises RuntimeError
            problems = [str(err)]
    message = f"rebuilding index {index_dir}: {'; '.join(problems)}"
    warnings.warn(message, stacklevel=3)
    log.warning(message)
    return None


def search_stage(index, table: RegionTable, query_vectors: np.ndarray, queries: list,
                 k: int | None, memory_gb: float = 1.0) -> list[Ranking]:
    """Region search -> image ranking (an image ranks at its best region), one
    Ranking per query, the query's own image excluded.

    Args:
        query_vectors: (n_queries, D) float32, in ``queries`` order.
        k: regions retrieved per query (None: all, exact indexes only).
        memory_gb: working memory of the exhaustive search's query blocks (``search.memory_gb``).
    """
    from claid.index import search_images

    return search_images(
        index,
        query_vectors,
        table.region_image,
        table.boxes,
        table.image_ids,
        [q.qid for q in queries],
        k=k,
        exclude=[{q.image} if q.image else set() for q in queries],
        memory_gb=memory_gb,
    )
