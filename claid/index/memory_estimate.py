"""How much memory a run will need, estimated before extraction from the collection
size and the index preset, and a clear stop when it exceeds the machine.

    estimate_run_memory(settings, n_images, n_queries) -> MemoryEstimate
    check_run_memory(settings, n_images, n_queries)   SettingsError naming the estimate and a preset that fits

The estimate adds what the stages after extraction hold at once (measured with
``experiments/bench_scale``): the index (bytes per row from the FAISS factory), 24
bytes per row of search table (image number, box), the global baseline's index
(the whole-image vectors themselves stay in the store), the training sample, the search's working memory
(``search.memory_gb`` for exhaustive search) and the rankings (twice, while the
chance level shuffles them), plus :data:`PROCESS_GIB` for the interpreter, the
libraries and the networks. The number of regions per image is not known before
extraction: ``search.regions_per_image`` (default 30) stands for it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import faiss

from claid.config.rules import SettingsError

log = logging.getLogger(__name__)

#: Interpreter, torch, FAISS, the networks and their buffers (measured 0.6 GiB before
#: the first stage of bench_scale, without networks; a ViT-B and a ResNet-50 add ~0.5).
PROCESS_GIB = 1.5
#: Bytes per row of the search table: region_image int64 + box 4 x float32.
TABLE_ROW_BYTES = 24
#: Bytes per ranked entry: a list slot for the image id, the float32 score, the box.
RANKED_ENTRY_BYTES = 28
#: Training rows when ``train_size`` is null (``claid.index.chunked_build.MAX_TRAIN_ROWS``).
MAX_TRAIN_ROWS = 100_000
GIB = 2**30


@dataclass
class MemoryEstimate:
    """Estimated peak memory of the stages after extraction, in bytes, by part."""

    rows: int
    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        return ", ".join(f"{name} {value / GIB:.1f}" for name, value in self.parts.items()
                         if value >= 0.05 * GIB)


def index_bytes_per_row(factory: str, dim: int) -> float:
    """Bytes one indexed vector takes in a FAISS index made from ``factory`` at ``dim``
    (codes, ids of inverted lists, graph links, refinement codes)."""
    owner = faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
    return _bytes_per_row(owner)


def _bytes_per_row(owner) -> float:
    index = faiss.downcast_index(owner)  # a view: ``owner`` keeps the C++ object alive
    if isinstance(index, faiss.IndexRefine):
        return _bytes_per_row(index.base_index) + _bytes_per_row(index.refine_index)
    if isinstance(index, faiss.IndexPreTransform):
        return _bytes_per_row(index.index)
    if isinstance(index, faiss.IndexHNSW):  # level-0 links (2M) plus ~1/M of upper levels
        links = 2 * index.hnsw.nb_neighbors(1) * 4 * 1.1
        return _bytes_per_row(index.storage) + links
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return ivf.code_size + 8  # code + int64 id in its inverted list
    return float(index.code_size)


@dataclass(frozen=True)
class MemorySettings:
    """What the estimate reads: the index preset (``index.*``), the vectors' width and
    stored dtype, and the ``search`` settings that hold memory.

    Attributes:
        factory, whitening, whitening_dim, k, train_size: the ``index`` group's.
        dim: ``descriptor.dim`` (None: unknown, nothing is estimated).
        stored_dtype: ``store.dtype``.
        regions_per_image, whole_image_region, global_baseline, memory_gb,
            max_memory_gb: the ``search`` group's.
    """

    factory: str = "Flat"
    whitening: str = "none"
    whitening_dim: int | None = None
    k: int | None = None
    train_size: int | None = None
    dim: int | None = None
    stored_dtype: str = "float16"
    regions_per_image: int = 30
    whole_image_region: bool = False
    global_baseline: bool = True
    memory_gb: float = 0.5
    max_memory_gb: float | None = None
    ondisk_parts: int | None = None  # an index whose lists live on disk, built in this many parts


#: The ``index`` keys the estimate reads.
INDEX_KEYS = ("factory", "whitening", "whitening_dim", "k", "train_size")


def _ondisk_parts(index: dict) -> int | None:
    """Parts of an on-disk index preset (``index=ivfpq_ondisk``), None for an in-memory one."""
    if str(index.get("_target_", "")).endswith("build_ondisk_index"):
        return max(1, int(index.get("parts") or 1))
    return None


def memory_settings(*, index: dict, descriptor_dim: int | None, search, stored_dtype: str) -> MemorySettings:
    """:class:`MemorySettings` from an ``index`` node, ``descriptor.dim``, the
    :class:`claid.index.index_stage.SearchSettings` and ``store.dtype``."""
    return MemorySettings(
        **{key: index[key] for key in INDEX_KEYS if key in index}, dim=descriptor_dim,
        ondisk_parts=_ondisk_parts(index),
        stored_dtype=stored_dtype, regions_per_image=search.regions_per_image,
        whole_image_region=search.whole_image_region, global_baseline=search.global_baseline,
        memory_gb=search.memory_gb, max_memory_gb=search.max_memory_gb)


def estimate_run_memory(settings: MemorySettings, n_images: int, n_queries: int) -> MemoryEstimate:
    """Peak memory of the stages after extraction for ``n_images`` database images.

    Args:
        settings: the index preset, vectors and search settings (:class:`MemorySettings`).
        n_images: database images.
        n_queries: queries searched.
    """
    s = settings
    dim = int(s.dim)
    per_image = int(s.regions_per_image) + (1 if s.whole_image_region else 0)
    rows = n_images * per_image
    width = int(s.whitening_dim or dim)
    train_rows = min(rows, int(s.train_size) if s.train_size else MAX_TRAIN_ROWS)
    needs_training = s.whitening == "database" or s.factory != "Flat"
    ranked = n_queries * (n_images if s.k is None else min(int(s.k), n_images))
    per_row = index_bytes_per_row(s.factory, width)
    stored = 2 if s.stored_dtype == "float16" else 4
    parts = {
        # a flat index is memory-mapped from its file (page cache, not anonymous
        # memory) but read once per query block: counted, as memory it wants resident
        # an on-disk index holds one part's codes at a time while it is built (twice, as
        # encoded and as written), and its lists are memory-mapped when it is searched
        "index": int(rows * per_row) if s.ondisk_parts is None else int(2 * -(-rows // s.ondisk_parts) * per_row),
        "search table": rows * TABLE_ROW_BYTES,
        # the whole-image vectors stay in the store (RegionStore.whole_image_rows),
        # the global baseline's own index over them does not
        "global baseline index": int(n_images * per_row) if s.global_baseline else 0,
        # gathered in the stored dtype, converted once to float32 and normalised in place
        "training sample": train_rows * dim * (stored + 4) if needs_training else 0,
        "search": int(float(s.memory_gb) * GIB) if s.k is None else 0,
        "rankings": 2 * ranked * RANKED_ENTRY_BYTES,
        "process and networks": int(PROCESS_GIB * GIB),
    }
    return MemoryEstimate(rows, parts)


def machine_memory_bytes() -> int:
    """Physical memory of this machine, bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_run_memory(settings: MemorySettings, n_images: int, n_queries: int) -> MemoryEstimate | None:
    """Stop the run before extraction when its estimated memory exceeds the limit
    (``search.max_memory_gb``, default: this machine's memory), naming the estimate
    and the shipped index presets that would fit. Returns the estimate (None when
    ``descriptor.dim`` is unknown, logged)."""
    from omegaconf import OmegaConf

    if settings.dim is None:
        log.warning("descriptor.dim unknown: the run's memory is not estimated")
        return None
    limit_gb = settings.max_memory_gb
    limit = int(float(limit_gb) * GIB) if limit_gb is not None else machine_memory_bytes()
    estimate = estimate_run_memory(settings, n_images, n_queries)
    log.info("estimated memory after extraction: %.1f GiB (%s)", estimate.total / GIB,
             estimate.describe())
    if estimate.total <= limit:
        return estimate
    fits = []
    for path in sorted((Path(__file__).resolve().parents[2] / "conf" / "index").glob("*.yaml")):
        preset = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        other = replace(settings, **{key: preset.get(key) for key in INDEX_KEYS}, ondisk_parts=_ondisk_parts(preset))
        total = estimate_run_memory(other, n_images, n_queries).total
        if total <= limit:
            fits.append(f"index={path.stem} ({total / GIB:.1f} GiB)")
    advice = ("use " + " or ".join(fits)) if fits else "no shipped index preset fits either"
    raise SettingsError(
        f"index={settings.factory}: estimated memory {estimate.total / GIB:.1f} GiB for "
        f"{n_images:,} images x {settings.regions_per_image} regions "
        f"({estimate.describe()}) exceeds the limit of {limit / GIB:.1f} GiB "
        f"(search.max_memory_gb, default this machine's memory); {advice}")
