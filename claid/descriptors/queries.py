"""The query stage of a run: one vector per query, described as the database was.

Image queries go through the descriptor's ``describe_query`` (a crop of the query
box, or the box pooled from the whole image's feature map); text queries through
its ``encode_text`` (SigLIP's joint space).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from claid.artifacts import config_hash, dataset_key
from claid.checksums import load_checked_npy, save_checked_npy
from claid.images import decode_entry

log = logging.getLogger(__name__)


def load_query_image(bench, query):
    """A query's decoded image; DatasetFormatError naming the query when it cannot be
    decoded (a query cannot be skipped: the scores would change meaning)."""
    from claid.datasets import DatasetFormatError
    from claid.images import ImageError, load_image

    try:
        return load_image(bench.path(query.image), options=bench.decode)
    except ImageError as err:
        raise DatasetFormatError(
            f"query {query.qid!r} ({query.image}): {err.reason}; fix the file or drop the query"
        ) from err


def check_query_images(bench) -> None:
    """Decode every query image once, so a bad one stops a run before the extraction
    (the queries are few next to the database)."""
    for query in bench.queries:
        if query.image is not None:
            load_query_image(bench, query)


@dataclass(frozen=True)
class QuerySettings:
    """What the query stage reads.

    Attributes:
        descriptor: the ``descriptor`` node (keys the cached query vectors; its
            ``query`` says crop or pool).
        accelerator, devices, precision: the extraction's device and precision
            (``engine.*``), which a network descriptor describes queries with too.
    """

    descriptor: dict
    accelerator: str = "cpu"
    devices: Any = 1
    precision: Any = "32-true"

    @property
    def reads_text(self) -> bool:
        """Whether the descriptor encodes text (SigLIP's joint space)."""
        from hydra.utils import get_class

        return hasattr(get_class(self.descriptor["_target_"]), "encode_text")


@dataclass(frozen=True)
class QuerySelection:
    """The queries a run searches and what was left out.

    Attributes:
        queries: image queries, plus text queries when the descriptor reads text.
        text_skipped: text queries left out (the descriptor has no text encoder).
        text_queries: text queries searched.
    """

    queries: list
    text_skipped: int
    text_queries: int


def searchable_queries(bench, reads_text: bool, descriptor_name: str = "") -> QuerySelection:
    """Image queries, plus text queries when the descriptor can encode text
    (``reads_text``); counts what was left out."""
    searchable = [q for q in bench.queries if q.image is not None or (reads_text and q.text)]
    skipped_text = len(bench.queries) - len(searchable)
    if skipped_text:
        log.warning(
            "%d text queries skipped: descriptor %s has no text encoder (use descriptor=siglip_tokens "
            "backbone=siglip_vitb16)", skipped_text, descriptor_name,
        )
    return QuerySelection(searchable, skipped_text, sum(q.image is None for q in searchable))


def query_stage(settings: QuerySettings, bench, get_descriptor: Callable[[], Any], cache_dir: Path) -> np.ndarray:
    """One vector per query of ``bench``, cached as ``queries-<hash>.npy`` with its
    checksum and key in ``queries-<hash>.json`` (a damaged or mismatched cache is
    rebuilt with a warning).

    Args:
        settings: the descriptor record and the extraction's device (:class:`QuerySettings`).
        bench: the benchmark whose ``queries`` are described.
        get_descriptor: returns the run's region descriptor (built only when the vectors
            are not cached).
        cache_dir: where ``queries-<hash>.npy`` lives.
    Returns:
        (n_queries, D) float32 in ``bench.queries`` order.
    """
    mode = bench.protocol.get("query", "crop")
    described_as = settings.descriptor.get("query")
    if mode in ("crop", "pool") and described_as is not None and mode != described_as:
        raise ValueError(
            f"dataset.query={mode} but descriptor.query={described_as}: set descriptor.query "
            "(the dataset follows it by default)"
        )
    key = {"dataset": dataset_key(bench), "descriptor": settings.descriptor, "mode": mode,
           **decode_entry(bench.decode)}
    path = cache_dir / f"queries-{config_hash(key)}.npy"
    # reused only when its checksum and what it was built from match (else rebuilt)
    cached = load_checked_npy(path, built_from=key)
    if cached is not None:
        return cached
    descriptor = get_descriptor()
    rows = []
    with _like_the_database(settings, descriptor):
        for query in tqdm(bench.queries, desc="describing queries", unit="query", disable=None):
            if query.image is None:
                if query.text is None or not hasattr(descriptor, "encode_text"):
                    raise ValueError(f"query {query.qid!r} has no image, and no text this descriptor can encode")
                rows.append(descriptor.encode_text([query.text])[0])
                continue
            image = load_query_image(bench, query)
            box = None if mode == "full" else query.box
            rows.append(descriptor.describe_query(image, box))
    vectors = np.stack(rows).astype(np.float32) if rows else np.zeros((0, descriptor.dim), np.float32)
    save_checked_npy(path, vectors, built_from=key)
    return vectors


def _like_the_database(settings: QuerySettings, descriptor):
    """The device and precision the database was described with (``engine.*``), for
    a descriptor that is a network; Lightning leaves it on the CPU after extraction."""
    import torch

    if not isinstance(descriptor, torch.nn.Module):
        return contextlib.nullcontext()
    from claid.engine.query_device import described_like_extraction

    return described_like_extraction([descriptor], accelerator=settings.accelerator,
                                     devices=settings.devices, precision=settings.precision)
