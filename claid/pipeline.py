"""``run(cfg)``: the stages of one experiment, top to bottom.

    run_settings(cfg) -> each stage's own settings       claid/config/run_settings.py
    dataset -> extract_stage (regions in a RegionStore)   claid/engine/extraction_stage.py
      from a region source: cut tokens or read a file     claid/engine/cut_source.py, claid/detections/
    -> region_table + index_stage (FAISS index dir)       claid/index/
    -> query_stage (one vector per query)                 claid/descriptors/queries.py
    -> search_stage (Ranking per query)                   claid/index/index_stage.py
    -> rerank_stage (optional)                            claid/rerank/
    -> evaluate + baselines + detection (Scores)          claid/evaluation/
    -> metrics.json, rankings.json, queries.json          claid/report/ (the one writer)
    -> pictures, MLflow                                   claid/figures.py, claid/tracking/

This module and :mod:`claid.config` are the only code that reads the whole config:
every stage takes its own settings object plus its inputs and returns what it made.

Under several ranks (DDP on one node or many: Lightning's own launcher, ``ddp_spawn``,
torchrun, SLURM) every rank runs the extraction and only global rank 0 the rest, after
every rank has committed its shards (:mod:`claid.engine.ranks`); the other ranks open
no MLflow run and write nothing but their shards and a report of their share
(:mod:`claid.engine.rank_reports`), which rank 0 gathers into the store's summary.

Every stage that costs real time owns its artifact under ``paths.cache_dir``, named
by a readable prefix and a hash of its own and its upstream configuration
(:mod:`claid.artifacts`), and skips the work when the artifact is already there. So
a sweep over index or search parameters reuses the extracted regions, and a sweep
over the cutter reuses the backbone tokens when ``cache.tokens`` is on.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from claid.config.rules import SettingsError

__all__ = ["RunResult", "SettingsError", "run"]

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What ``run`` returns: the run dir, the flat metrics and where artifacts are."""

    run_dir: Path
    metrics: dict[str, float]
    artifacts: dict[str, str]
    report: dict
    tracking: dict = field(default_factory=dict)  # run_id, experiment_id, uri (empty: tracking off)


def run(cfg: DictConfig, run_dir: str | Path | None = None) -> RunResult | None:
    """Run one experiment end to end and return its metrics.

    Args:
        cfg: the composed Hydra config (conf/config.yaml).
        run_dir: where metrics.json and pictures go (default: Hydra's run dir, else cwd).
    Returns:
        The run's result on global rank 0; None on any other rank, which only
        extracts its share of the database images.
    """
    from claid.config.build import build
    from claid.config.run_settings import run_settings
    from claid.descriptors.queries import check_query_images, query_stage, searchable_queries
    from claid.engine.extraction_stage import extract_stage, whole_image_stage
    from claid.engine.ranks import is_global_zero
    from claid.evaluation import evaluate
    from claid.evaluation.baselines import baseline_scores
    from claid.evaluation.conventions import with_conventions
    from claid.evaluation.detection_stage import detection_stage
    from claid.evaluation.protocols import queries_with_positives
    from claid.figures import run_figures
    from claid.index.index_stage import index_stage, search_stage
    from claid.index.memory_estimate import check_run_memory
    from claid.index.search_table import region_table
    from claid.models.weight_files import weight_params
    from claid.report.run_report import RunOutcome, run_report, write_run_files
    from claid.rerank.rerank_stage import rerank_stage
    from claid.store.integrity import store_content_hash
    from claid.tracking.run_identity import tracker_for

    settings = run_settings(cfg)  # every check, then each stage's own settings: the one read of cfg
    cache_dir = settings.cache_dir
    cache_dir.mkdir(parents=True, exist_ok=True)
    source = settings.regions  # where regions come from: cut tokens or another detector's file
    if not is_global_zero():  # read before extraction: the launcher has set it already
        bench = replace(build(settings.dataset), decode=settings.decode)
        extract_stage(settings.extraction, bench, source, cache_dir)
        log.info("extraction done on this rank; global rank 0 runs the rest of the job")
        return None
    run_dir = Path(run_dir or _hydra_run_dir() or os.getcwd())
    run_dir.mkdir(parents=True, exist_ok=True)
    tracker = tracker_for(settings.tracking)  # run name, tags, params, sweep parent: claid/tracking/
    timing: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = fn()
        timing[f"time/{name}_s"] = round(time.perf_counter() - start, 3)
        log.info("%s: %.2f s", name, timing[f"time/{name}_s"])
        return value

    with tracker.run(tags={"run_dir": str(run_dir)}):
        bench = with_conventions(timed("dataset", lambda: build(settings.dataset)), settings.evaluation)
        bench = replace(bench, decode=settings.decode)  # how every stage decodes the files
        # stops now, not after hours of extraction, if it cannot fit
        check_run_memory(settings.memory, len(bench.database), len(bench.queries))
        # a query image that cannot be decoded stops the run now, not after the extraction
        timed("query_images", lambda: check_query_images(bench))
        store = timed("extract", lambda: extract_stage(settings.extraction, bench, source, cache_dir))
        search = settings.search
        whole = None
        if (search.whole_image_region or search.global_baseline) and store.image_ids:
            whole = timed("whole_image", lambda: whole_image_stage(bench, store, source, cache_dir))
        table = region_table(store, whole if search.whole_image_region else None)
        # keyed by the store's content (verified on reuse), not its folder name
        upstream = {"regions": store_content_hash(store), "whole_image_region": bool(search.whole_image_region)}
        report_settings = settings.report
        weights = weight_params({"backbone": report_settings.backbone, "descriptor": report_settings.descriptor})
        tracker.log_params(weights)  # which file, which hash
        selection = searchable_queries(bench, settings.queries.reads_text, settings.queries.descriptor["_target_"])
        outcome = RunOutcome(bench=bench, store=store, source_counts=source.report_counts(store),
                             weights=weights, selection=selection)
        searchable = selection.queries
        family = bench.protocol.get("family", "none")
        index = None
        if table.n_rows and family != "detection":  # detection benchmarks only score regions
            index, outcome.index_dir = timed("index", lambda: index_stage(settings.index, table, upstream, cache_dir))
        if searchable and index is not None and family != "none":
            queries = outcome.queries = replace(bench, queries=searchable)
            qvecs = timed("queries", lambda: query_stage(settings.queries, queries, source.descriptor, cache_dir))
            rankings = timed("search", lambda: search_stage(index, table, qvecs, searchable, settings.index.k,
                                                         float(search.memory_gb)))
            outcome.rerank = timed("rerank", lambda: rerank_stage(settings.rerank, queries, index, outcome.index_dir,
                                                                  table, qvecs, rankings, cache_dir))
            rankings = outcome.rankings = outcome.rerank.rankings
            index = None  # not needed after the search: its memory goes back before the baselines
            # a query without positives is searched (rankings.json) but scores nothing
            n_scorable = len(queries_with_positives(queries))
            outcome.queries_without_positives = len(searchable) - n_scorable
            if n_scorable:
                outcome.scores = timed("evaluate", lambda: evaluate(rankings, queries))
                outcome.baselines = timed("baselines", lambda: baseline_scores(
                    settings.baselines, queries, rankings, qvecs, whole, store))
            else:
                log.warning("no query has a positive: the %d rankings are saved, nothing is scored",
                            len(rankings))
        elif index is not None:
            log.info("dataset %s has no queries to score: indexed only; search it with "
                     "`claid search --index-dir %s <image>`", bench.name, outcome.index_dir)
        if bench.gt_boxes or bench.gt_masks_file:
            outcome.detection = timed("detection", lambda: detection_stage(store, bench))
        outcome.timing = timing
        report = run_report(report_settings, outcome)
        artifacts = write_run_files(run_dir, report_settings, outcome, report)
        report_dict = report.as_dict()
        artifacts.update(run_figures(bench, store, outcome.rankings, run_dir, report_dict,
                                     caption=f"{tracker.identity.name} · {bench.name}",
                                     n_images=tracker.n_figure_images, n_queries=tracker.n_figure_queries))
        tracker.log_metrics(report.metrics)
        for path in artifacts.values():
            tracker.log_artifact(path)
        tracker.set_tags({"whole_image_region": str(bool(search.whole_image_region))})
    tracked = {"run_id": tracker.run_id, "experiment_id": tracker.experiment_id, "uri": tracker.uri} \
        if tracker.enabled else {}
    return RunResult(run_dir=run_dir, metrics=report.metrics, artifacts=artifacts, report=report_dict,
                     tracking=tracked)


def _hydra_run_dir() -> str | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.output_dir
    except ValueError:
        return None
