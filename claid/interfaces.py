"""What a component must meet to plug into claid, written once: a backbone, a cutter, a
region descriptor, a region source, a re-ranking step and a dataset loader.

A component from outside the package enters through Hydra: a YAML file in a config
group (``conf/cutter/<option>.yaml`` in a folder on ``hydra.searchpath``) whose
``_target_`` names its class; keyword settings in the YAML become constructor
keywords. ``examples/grid_cutter/`` is a cutter built that way, and
``docs/extending.md`` walks through it. Every built-in implementation is checked
against these protocols by ``tests/test_interfaces.py``.

Conventions (``../STYLE.md``): rows are items; float32 unless stated; boxes are
``(x1, y1, x2, y2)`` with exclusive ends; vectors are L2-normalised where a docstring
says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from claid.structures import Benchmark, PatchGrid, Ranking, RegionTree


@runtime_checkable
class Backbone(Protocol):
    """Image -> patch tokens (``conf/backbone/``; base class :class:`claid.backbones.base.Backbone`).

    Attributes:
        patch_size: side of one patch, network-input pixels.
        embed_dim: D, the width of one token.
    """

    patch_size: int
    embed_dim: int

    def preprocess(self, image) -> tuple[Any, tuple[float, float]]:
        """One RGB ``PIL.Image`` -> ``(pixels, scale)``: pixels a (3, h, w) float32 tensor,
        h and w multiples of ``patch_size``; scale (sy, sx) original pixels per input pixel."""

    def __call__(self, pixels) -> Any:
        """(B, 3, h, w) -> (B, (h/P)*(w/P), D) patch tokens (CLS and register tokens dropped)."""

    def extract_patches(self, image) -> PatchGrid:
        """One image -> its :class:`~claid.structures.PatchGrid` (tokens as float32 numpy)."""


@runtime_checkable
class Cutter(Protocol):
    """Patch tokens -> a region hierarchy (``conf/cutter/``; e.g. :class:`claid.cutters.RegionCutter`).

    Called from the extraction's cut workers, possibly from several threads at once:
    keep no per-image state on the instance.
    """

    def __call__(self, patch_grid: PatchGrid) -> RegionTree:
        """The regions of one image: masks (R, H, W) bool over the patch grid, boxes
        (R, 4) int64 in patch units, parent (R,) int64 (-1: none), depth (R,) int64 >= 1,
        connectivity and energy_share (R,) float32; R may be 0."""

    def config(self) -> dict[str, Any]:
        """The settings as plain data (recorded with the region store)."""


@runtime_checkable
class RegionDescriptor(Protocol):
    """Image + region boxes -> one L2-normalised vector per region (``conf/descriptor/``;
    base class :class:`claid.descriptors.base.RegionDescriptor`).

    Attributes:
        dim: D, the vectors' length.
        needs_image: False for a descriptor that pools the detector's own tokens.
        poolable_without_network: the class accepts ``network=False`` (feature maps cached).
    """

    dim: int
    needs_image: bool
    poolable_without_network: bool

    def describe(self, image, boxes: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        """(R, 4) float32 boxes in original pixels (and optional (R, h, w) masks) ->
        (R, D) float32 unit rows."""

    def describe_query(self, image, box: Sequence[float] | None) -> np.ndarray:
        """A query: the crop of ``box`` (or the box pooled, per the descriptor's ``query``
        setting; None: the whole image) -> (D,) float32 unit vector."""


@runtime_checkable
class RegionSource(Protocol):
    """Where the extraction stage's regions come from: cut from tokens
    (:class:`claid.engine.cut_source.CutRegions`) or read from a file
    (:class:`claid.detections.file_regions.RegionsFromFile`). A ``cutter`` group whose
    class sets ``makes_regions = True`` is a source of its own (chosen once, by
    :func:`claid.config.run_settings.region_source`, which builds it with ``node`` (its group's
    resolved node), ``descriptor`` (the descriptor's), ``memory_limit_gb``
    (``search.max_memory_gb``) and the group's own keywords).
    """

    makes_regions: bool
    descriptor_node: dict

    def key_parts(self) -> dict:
        """``{"backbone", "cutter", "descriptor"}``: what the region store is keyed by
        besides the images, dtype, precision and decoding (plain JSON data)."""

    def weight_groups(self) -> dict[str, dict]:
        """group -> node of every model whose weight file the run needs."""

    def descriptor(self) -> Any:
        """The region descriptor (built once; the query stage describes queries with it)."""

    def report_counts(self, store) -> dict:
        """Counts the run report adds under ``counts`` (may be empty)."""

    def extract(self, settings, bench: Benchmark, cache_dir: Path, key: dict, store_dir: Path) -> Any:
        """Extract the regions of ``bench.database`` images not yet in ``store_dir`` into it
        (resumable: images already stored are skipped), with ``settings`` the
        :class:`claid.engine.extraction_stage.ExtractionSettings` and ``key`` the store key."""


@runtime_checkable
class Reranker(Protocol):
    """One re-ranking method: rankings -> rankings (``conf/rerank/``; the built-in ones are
    :data:`claid.rerank.methods.STEPS`, run in the order :data:`claid.rerank.settings.ORDER`
    by :func:`claid.rerank.methods.rerank`).

    Attributes:
        name: the ``rerank.<name>`` section it reads.
        settings_type: the dataclass of its settings (defaults = ``conf/rerank/<name>.yaml``).
    """

    name: str
    settings_type: type

    def __call__(self, state: Any, settings: Any) -> Any:
        """Re-rank ``state`` (:class:`claid.rerank.apply.RerankState`: the index and its rows,
        the whitened query vectors (Q, D) float32, the rankings, per query the excluded
        images) and return the new state; ``state.notes[name]`` says what it did."""


#: A dataset loader (``conf/dataset/``): keyword settings -> :class:`~claid.structures.Benchmark`,
#: raising :class:`claid.datasets.DatasetNotFoundError` (what is missing, where to get it,
#: the layout) or :class:`claid.datasets.DatasetFormatError` (file, line, why).
DatasetLoader = Callable[..., Benchmark]

#: The protocol of each component group.
GROUP_PROTOCOLS: dict[str, type] = {
    "backbone": Backbone,
    "cutter": Cutter,
    "descriptor": RegionDescriptor,
}


def missing_members(obj_or_class: Any, protocol: type) -> list[str]:
    """The members of ``protocol`` that ``obj_or_class`` lacks (empty: it meets it).
    Works on classes too, so a component can be checked without building it."""
    names = [n for n in getattr(protocol, "__protocol_attrs__", ())
             if not n.startswith("_") or n == "__call__"]
    if not names:  # Python < 3.12 keeps no __protocol_attrs__
        names = [n for n in vars(protocol) if not n.startswith("_") or n == "__call__"]
        names += list(getattr(protocol, "__annotations__", {}))
    cls = obj_or_class if isinstance(obj_or_class, type) else type(obj_or_class)
    declared = {n for klass in cls.__mro__ for n in getattr(klass, "__annotations__", {})}
    lacking = []
    for name in dict.fromkeys(names):
        if name == "__call__" and callable(obj_or_class):
            continue
        if not hasattr(obj_or_class, name) and name not in declared:
            lacking.append(name)
    return lacking


def check_ranking(ranking: Ranking) -> None:
    """Raise ValueError unless ``ranking`` is well formed: images as many as scores and
    boxes, scores (N,) finite and non-increasing, boxes (N, 4)."""
    n = len(ranking.images)
    scores, boxes = np.asarray(ranking.scores), np.asarray(ranking.boxes)
    if scores.shape != (n,) or boxes.shape != (n, 4):
        raise ValueError(f"ranking {ranking.qid}: {n} images, scores {scores.shape}, boxes {boxes.shape}")
    if n and (not np.all(np.isfinite(scores)) or np.any(np.diff(scores) > 1e-6)):
        raise ValueError(f"ranking {ranking.qid}: scores must be finite and best first")
