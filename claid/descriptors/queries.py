"""The query stage of a run: one vector per query, described as the database was.

Image queries go through the descriptor's ``describe_query`` (a crop of the query
box, or the box pooled from the whole image's feature map); text queries through
its ``encode_text`` (SigLIP's joint space).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from claid.artifacts import config_hash, dataset_key, plain
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


def searchable_queries(cfg, bench, report: dict) -> list:
    """Image queries, plus text queries when the descriptor can encode text; the
    report's ``settings`` counts what was left out."""
    from hydra.utils import get_class

    reads_text = hasattr(get_class(cfg.descriptor._target_), "encode_text")
    searchable = [q for q in bench.queries if q.image is not None or (reads_text and q.text)]
    if len(searchable) < len(bench.queries):
        skipped_text = len(bench.queries) - len(searchable)
        report["settings"]["text_queries_skipped"] = skipped_text
        log.warning(
            "%d text queries skipped: descriptor %s has no text encoder (use descriptor=siglip_tokens "
            "backbone=siglip_vitb16)", skipped_text, cfg.descriptor._target_,
        )
    report["settings"]["text_queries"] = sum(q.image is None for q in searchable)
    return searchable


def query_stage(cfg, bench, parts, cache_dir: Path) -> np.ndarray:
    """One vector per query of ``bench``, cached as ``queries-<hash>.npy`` with its
    checksum and key in ``queries-<hash>.json`` (a damaged or mismatched cache is
    rebuilt with a warning).

    Returns:
        (n_queries, D) float32 in ``bench.queries`` order.
    """
    mode = bench.protocol.get("query", "crop")
    described_as = cfg.descriptor.get("query")
    if mode in ("crop", "pool") and described_as is not None and mode != described_as:
        raise ValueError(
            f"dataset.query={mode} but descriptor.query={described_as}: set descriptor.query "
            "(the dataset follows it by default)"
        )
    key = {"dataset": dataset_key(bench), "descriptor": plain(cfg.descriptor), "mode": mode,
           **decode_entry(bench.decode)}
    path = cache_dir / f"queries-{config_hash(key)}.npy"
    # reused only when its checksum and what it was built from match (else rebuilt)
    cached = load_checked_npy(path, built_from=key)
    if cached is not None:
        return cached
    descriptor = parts.get("descriptor")
    rows = []
    with _like_the_database(cfg, descriptor):
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


def _like_the_database(cfg, descriptor):
    """The device and precision the database was described with (``engine.*``), for
    a descriptor that is a network; Lightning leaves it on the CPU after extraction."""
    import torch

    if not isinstance(descriptor, torch.nn.Module):
        return contextlib.nullcontext()
    from claid.engine.query_device import described_like_extraction

    engine = cfg.engine
    return described_like_extraction([descriptor], accelerator=engine.accelerator,
                                     devices=engine.devices, precision=engine.precision)
