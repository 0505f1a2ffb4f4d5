"""``run(cfg)``: the stages of one experiment, top to bottom.

    dataset -> extract_stage (regions in a RegionStore)   claid/engine/extraction_stage.py
    -> region_table + index_stage (FAISS index dir)       claid/index/
    -> query_stage (one vector per query)                 claid/descriptors/queries.py
    -> search_stage (Ranking per query)                   claid/index/index_stage.py
    -> evaluate + baselines + detection (Scores)          claid/evaluation/
    -> metrics.json, rankings.json, pictures, MLflow      claid/figures.py, claid/tracking/

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from claid.artifacts import atomic_write_json
from claid.config.checks import (
    check_group_keys,
    check_model_names,
    check_rerank_settings,
    check_search_settings,
    check_values,
)
from claid.config.rules import SettingsError
from claid.images import DecodeOptions

__all__ = ["RunResult", "SettingsError", "check_settings", "run"]

log = logging.getLogger(__name__)

#: Config groups that build an object (their keys are checked against the target).
BUILT_GROUPS = ("dataset", "backbone", "cutter", "descriptor", "index", "engine", "tracking")


@dataclass
class RunResult:
    """What ``run`` returns: the run dir, the flat metrics and where artifacts are."""

    run_dir: Path
    metrics: dict[str, float]
    artifacts: dict[str, str]
    report: dict


def check_settings(cfg: DictConfig) -> None:
    """Every check that needs no data and no network, before hours of extraction:
    unknown keys in any group that builds an object, value ranges and choices
    (``claid.config.checks.VALUE_RULES``), timm model names, and ``search.*``."""
    from claid.engine.extraction_stage import RUN_KEYS
    from claid.index.index_stage import SEARCH_KEYS

    read_by_the_run = {"index": SEARCH_KEYS, "engine": RUN_KEYS}  # not the target's keywords
    for group in BUILT_GROUPS:
        check_group_keys(group, cfg.get(group), read_by_the_run.get(group, ()))
    check_values(cfg)
    try:
        DecodeOptions.from_config(cfg.get("images"))
    except ValueError as err:
        raise SettingsError(str(err)) from None
    check_model_names(cfg)
    check_search_settings(cfg.search)
    check_rerank_settings(cfg.get("rerank"))


def run(cfg: DictConfig, run_dir: str | Path | None = None) -> RunResult | None:
    """Run one experiment end to end and return its metrics.

    Args:
        cfg: the composed Hydra config (conf/config.yaml).
        run_dir: where metrics.json and pictures go (default: Hydra's run dir, else cwd).
    Returns:
        The run's result on global rank 0; None on any other rank, which only
        extracts its share of the database images.
    """
    from claid.config.build import Components, build
    from claid.descriptors.queries import check_query_images, query_stage, searchable_queries
    from claid.engine.extraction_stage import extract_stage, whole_image_stage
    from claid.engine.ranks import is_global_zero
    from claid.evaluation import evaluate, scores_to_metrics
    from claid.evaluation.baselines import baseline_scores, shuffle_repeats_of
    from claid.evaluation.conventions import with_conventions
    from claid.evaluation.detection_stage import detection_stage, scores_dict
    from claid.evaluation.protocols import queries_with_positives
    from claid.evaluation.run_report import new_report, rankings_report
    from claid.figures import run_figures
    from claid.index.index_stage import index_stage, search_stage
    from claid.index.memory_estimate import check_run_memory
    from claid.index.search_table import region_table
    from claid.models.weight_files import weight_params
    from claid.rerank.rerank_stage import rerank_stage
    from claid.store.integrity import store_content_hash
    from claid.tracking.run_identity import figure_caption, tracker_for

    check_settings(cfg)
    cache_dir = Path(cfg.paths.cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    parts = Components(cfg)
    if not is_global_zero():  # read before extraction: the launcher has set it already
        extract_stage(cfg, _decoded_as_configured(build(cfg.dataset), cfg), parts, cache_dir)
        log.info("extraction done on this rank; global rank 0 runs the rest of the job")
        return None
    run_dir = Path(run_dir or _hydra_run_dir() or os.getcwd())
    run_dir.mkdir(parents=True, exist_ok=True)
    tracker = tracker_for(cfg)  # run name, tags, params, sweep parent: claid/tracking/
    timing: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = fn()
        timing[f"time/{name}_s"] = round(time.perf_counter() - start, 3)
        log.info("%s: %.2f s", name, timing[f"time/{name}_s"])
        return value

    with tracker.run(tags={"run_dir": str(run_dir)}):
        bench = with_conventions(timed("dataset", lambda: build(cfg.dataset)), cfg.get("evaluation"))
        bench = _decoded_as_configured(bench, cfg)
        check_run_memory(cfg, bench)  # stops now, not after hours of extraction, if it cannot fit
        # a query image that cannot be decoded stops the run now, not after the extraction
        timed("query_images", lambda: check_query_images(bench))
        store = timed("extract", lambda: extract_stage(cfg, bench, parts, cache_dir))
        whole = None
        if (cfg.search.whole_image_region or cfg.search.global_baseline) and store.image_ids:
            whole = timed("whole_image", lambda: whole_image_stage(cfg, bench, store, parts, cache_dir))
        table = region_table(store, whole if cfg.search.whole_image_region else None)
        # keyed by the store's content (verified on reuse), not its folder name
        upstream = {"regions": store_content_hash(store),
                    "whole_image_region": bool(cfg.search.whole_image_region)}
        report, metrics = new_report(cfg, bench, store)
        if "regions_from_file" in (store.summary or {}):  # cutter=from_file: what the file gave
            report["counts"]["regions_from_file"] = store.summary["regions_from_file"]
        report["settings"]["weights"] = weight_params({"backbone": cfg.backbone, "descriptor": cfg.descriptor})
        tracker.log_params(report["settings"]["weights"])  # which file, which hash
        searchable = searchable_queries(cfg, bench, report)
        family = bench.protocol.get("family", "none")
        index, rankings = None, []
        if table.n_rows and family != "detection":  # detection benchmarks only score regions
            index, index_dir = timed("index", lambda: index_stage(cfg, table, upstream, cache_dir))
            report["settings"]["index"] = str(index_dir)
        if searchable and index is not None and family != "none":
            queries = replace(bench, queries=searchable)
            qvecs = timed("queries", lambda: query_stage(cfg, queries, parts, cache_dir))
            rankings = timed("search", lambda: search_stage(index, table, qvecs, searchable, cfg.index.get("k"),
                                                         float(cfg.search.memory_gb)))
            rankings = timed("rerank", lambda: rerank_stage(cfg, queries, index, index_dir, table, qvecs, rankings,
                                                            report, metrics, cache_dir))
            index = None  # not needed after the search: its memory goes back before the baselines
            # a query without positives is searched (rankings.json) but scores nothing
            n_scorable = len(queries_with_positives(queries))
            report["counts"]["queries_without_positives"] = len(searchable) - n_scorable
            if n_scorable:
                scores = timed("evaluate", lambda: evaluate(rankings, queries))
                metrics.update(scores_to_metrics(scores))
                report["scores"] = [scores_dict(s) for s in scores]
                global_notes = report["settings"].setdefault("global_baseline", {})
                report["baselines"] = timed(
                    "baselines", lambda: baseline_scores(cfg, queries, rankings, qvecs, whole, store, global_notes))
                report["settings"]["shuffle_repeats"] = shuffle_repeats_of(rankings, cfg.search.shuffle_draws)
                for name, values in report["baselines"].items():
                    metrics.update({f"baseline/{name}/{key}": v for key, v in values.items()})
            else:
                log.warning("no query has a positive: the %d rankings are saved, nothing is scored",
                            len(rankings))
        elif index is not None:
            log.info("dataset %s has no queries to score: indexed only; search it with "
                     "`python -m claid search --index-dir %s <image>`", bench.name, report["settings"]["index"])
        if bench.gt_boxes or bench.gt_masks_file:
            metrics.update(timed("detection", lambda: detection_stage(store, bench, report)))
        metrics.update(timing)
        report["metrics"] = metrics
        report["timing"] = timing
        artifacts = {"metrics": str(atomic_write_json(run_dir / "metrics.json", report))}
        if rankings:
            saved = rankings_report(searchable, rankings, bench, int(cfg.search.save_top))
            artifacts["rankings"] = str(atomic_write_json(run_dir / "rankings.json", saved))
            from claid.evaluation.query_records import query_records  # per-query figures + marks

            records = query_records(queries, rankings, int(cfg.search.save_top))
            artifacts["queries"] = str(atomic_write_json(run_dir / "queries.json", records))
        artifacts.update(run_figures(bench, store, rankings, run_dir, report, caption=figure_caption(cfg, bench.name),
                                     n_images=tracker.n_figure_images, n_queries=tracker.n_figure_queries))
        tracker.log_metrics(metrics)
        for path in artifacts.values():
            tracker.log_artifact(path)
        tracker.set_tags({"whole_image_region": str(bool(cfg.search.whole_image_region))})
    return RunResult(run_dir=run_dir, metrics=metrics, artifacts=artifacts, report=report)


def _decoded_as_configured(bench, cfg):
    """``bench`` with the run's ``images:`` decoding options (claid/images.py), which
    every stage that decodes its files reads; the same on every rank."""
    return replace(bench, decode=DecodeOptions.from_config(cfg.get("images")))


def _hydra_run_dir() -> str | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.output_dir
    except ValueError:
        return None

