"""The re-ranking stage of a run (``rerank=none|aqe|dba|diffusion``, or several:
``rerank=[dba,aqe]``), between the search and the evaluation.

It returns a :class:`RerankOutcome`: the re-ranked rankings (what the run evaluates
from then on), the metrics ``rerank/before/<metric>`` (the plain search, scored by the
same protocol), ``rerank/after/<metric>`` and ``rerank/gain/<metric>`` (after -
before), and the notes the run report keeps as ``settings.rerank``: what ran, with
which settings, from which cached artifacts. The baselines (``baseline/*``) are not re-ranked: the
global descriptor is its own plain search and the shuffled chance level shuffles
whatever lists the run evaluates; ``settings.rerank.baselines`` says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from claid.artifacts import clean_stale_temps, file_lock
from claid.rerank.cache import (
    dba_dir,
    dba_key,
    diffusion_dir,
    diffusion_key,
    load_dba,
    load_offline,
    save_dba,
    save_offline,
)
from claid.rerank.common import RowSource, evaluated_exclusions
from claid.rerank.methods import rerank
from claid.rerank.settings import as_dict

log = logging.getLogger(__name__)

BASELINES_NOTE = ("baseline/* are not re-ranked: the global descriptor baseline is its own plain "
                  "search; the shuffled chance level shuffles the re-ranked lists")


@dataclass(frozen=True)
class RerankSettings:
    """What the re-ranking stage reads.

    Attributes:
        methods: ``{method: its settings}`` in running order
            (:func:`claid.rerank.settings.parse_rerank` of the ``rerank`` group); empty: none.
        k: ``index.k`` (regions retrieved per query; None: all).
        memory_gb: ``search.memory_gb``, the exhaustive search's working memory.
        descriptor: the ``descriptor`` node, recorded with a DBA index dir.
    """

    methods: dict = field(default_factory=dict)
    k: int | None = None
    memory_gb: float = 0.5
    descriptor: dict = field(default_factory=dict)
    local_backbone: dict | None = None  # rerank=ames: the DINOv2 (registers) backbone's node


@dataclass
class RerankOutcome:
    """What the stage made: the re-ranked rankings, the before / after / gain metrics
    and the notes on what ran (``settings.rerank`` of the run report)."""

    rankings: list
    metrics: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)


def rerank_stage(settings: RerankSettings, queries, index, index_dir, table, query_vectors, rankings,
                 cache_dir: Path) -> RerankOutcome:
    """Re-rank ``rankings`` as ``settings.methods`` asks (unchanged when it is empty).

    Args:
        settings: the methods and the search's k and memory (:class:`RerankSettings`).
        queries: the benchmark restricted to the searched queries (its protocol decides
            what alpha-QE and diffusion may use).
        index, index_dir, table: the searched index, its dir, its rows.
        query_vectors: (Q, D) as searched.
        rankings: the plain search's rankings of ``queries.queries``.
        cache_dir: where the DBA index dir and the diffusion offline part are kept.
    """
    methods = settings.methods
    if not methods:
        return RerankOutcome(rankings)
    from claid.index.search_table import read_search_meta

    notes = {"methods": list(methods), "settings": {m: as_dict(s) for m, s in methods.items()},
             "baselines": BASELINES_NOTE, "before": "rerank/before/*: the plain search"}
    before = _scores(rankings, queries)
    builder = _Builder(settings.descriptor, Path(cache_dir), read_search_meta(index_dir)["key"], table)
    local = _ames_inputs(settings, queries, cache_dir) if "ames" in methods else None
    qids = [q.qid for q in queries.queries]
    rows = RowSource.of_table(index, table)
    reranked, notes["methods_run"] = rerank(
        methods, index=index, rows=rows, query_vectors=query_vectors, qids=qids,
        own=[{q.image} if q.image else set() for q in queries.queries],
        exclusions=evaluated_exclusions(queries, queries.queries), rankings=rankings,
        k=settings.k, memory_gb=float(settings.memory_gb), prepare=builder, local=local)
    after = _scores(reranked, queries)
    metrics = {}
    for key, value in before.items():
        metrics[f"rerank/before/{key}"] = value
        if key in after:
            metrics[f"rerank/after/{key}"] = after[key]
            metrics[f"rerank/gain/{key}"] = after[key] - value
    return RerankOutcome(reranked, metrics, notes)


def _ames_inputs(settings: RerankSettings, queries, cache_dir: Path):
    """What ``rerank=ames`` reads: every database image's local descriptors (extracted
    with the DINOv2-registers backbone where the store lacks them; one more decode of
    each image, said in the log) and each query's, from its box's crop."""
    from claid.artifacts import database_key
    from claid.config.build import build
    from claid.descriptors.queries import load_query_image
    from claid.images import load_image
    from claid.rerank.ames_inputs import ames_inputs

    node = settings.local_backbone
    log.info("rerank=ames: local descriptors from %s (a second pass over the database images "
             "where the local-descriptor store lacks them)", node.get("model_name"))
    database = [(image_id, lambda image_id=image_id: load_image(queries.path(image_id), options=queries.decode))
                for image_id in queries.database]
    described = [(load_query_image(queries, q), q.box) for q in queries.queries]
    return ames_inputs(settings.methods["ames"], database_images=database, queries=described,
                       backbone=build(node), cache_dir=cache_dir,
                       source_key={"database": database_key(queries), "backbone": node},
                       dim=int(node.get("embed_dim", 768)))


def _scores(rankings, queries) -> dict:
    from claid.evaluation import evaluate, scores_to_metrics
    from claid.evaluation.protocols import queries_with_positives

    if not queries_with_positives(queries):
        return {}
    return scores_to_metrics(evaluate(rankings, queries))


class _Builder:
    """``prepare`` for the pipeline: find the DBA index / offline part in the cache
    or build and cache it (under a lock, as the index stage does)."""

    def __init__(self, descriptor: dict, cache_dir: Path, source_key: dict, table) -> None:
        self.descriptor, self.cache_dir, self.key, self.table = descriptor, cache_dir, source_key, table

    def __call__(self, name, index, rows, settings):
        return self.dba(index, rows, settings) if name == "dba" else self.diffusion(index, rows, settings)

    def dba(self, index, rows, settings):
        from claid.rerank.dba import augmented_index, augmented_vectors

        key = dba_key(self.key, as_dict(settings))
        directory = dba_dir(self.cache_dir, key)
        clean_stale_temps(self.cache_dir)
        with file_lock(self.cache_dir / f".{directory.name}.lock", what="building the DBA index"):
            found = load_dba(directory, key)
            if found is not None:
                new_index, vectors = found
                note = {"dir": str(directory), "reused": True, **new_index.meta.get("dba", {})}
            else:
                vectors, info = augmented_vectors(index, rows, n=settings.n, alpha=settings.alpha,
                                                  same_image=settings.same_image, block_rows=settings.block_rows)
                new_index = augmented_index(index, vectors, as_dict(settings))
                save_dba(directory, new_index, vectors, self.table, self.descriptor, key)
                note = {"dir": str(directory), "reused": False, **info, **new_index.meta["dba"]}
        if vectors is None:  # a flat DBA index holds its vectors
            vectors = new_index.database_vectors()
        self.key = key  # a diffusion after DBA diffuses the DBA vectors: keyed by them
        self.table_rows = rows
        new_rows = type(rows)(new_index, rows.region_image, rows.boxes, rows.image_ids, whitened=vectors)
        return new_index, new_rows, note

    def diffusion(self, index, rows, settings):
        from claid.rerank.diffusion import offline_part

        key = diffusion_key(self.key, as_dict(settings))
        directory = diffusion_dir(self.cache_dir, key)
        clean_stale_temps(self.cache_dir)
        with file_lock(self.cache_dir / f".{directory.name}.lock", what="the diffusion offline part"):
            offline = load_offline(directory, key, rows.n_rows)
            if offline is not None:
                return offline, {"dir": str(directory), "reused": True}
            offline, info = offline_part(index, rows, settings)
            save_offline(directory, offline, key, info)
        return offline, {"dir": str(directory), "reused": False, **info}
