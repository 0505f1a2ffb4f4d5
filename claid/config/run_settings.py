"""The one reader of the whole config: ``run_settings(cfg)`` turns each group into the
typed settings of the stage that uses it, once, after :func:`claid.config.checks.check_settings`.

Every stage takes its own settings object plus its inputs and returns what it made
(``claid/pipeline.py`` calls them top to bottom); no stage reads another group's keys.
The settings keep the groups' resolved nodes where a stage builds an object from them
or keys an artifact by them (``backbone``, ``descriptor``, ``index``...), so that the
cache keys are the same dicts they always were.

Where regions come from is decided here and only here (:func:`region_source`): cut
from a backbone's tokens by a cutter (:class:`claid.engine.cut_source.CutRegions`), or
read from another detector's file when the ``cutter`` group names a region source
(``cutter=from_file``: :class:`claid.detections.file_regions.RegionsFromFile`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from claid.artifacts import plain
from claid.config.checks import RUN_KEYS, SEARCH_KEYS, check_settings

#: Lightning's short precision names and the full ones they stand for (one store key)
_PRECISION_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}



@dataclass(frozen=True)
class RunSettings:
    """Every stage's settings, as :func:`run_settings` read them from one config."""

    cache_dir: Path
    dataset: dict  # the dataset group (built into a Benchmark by the pipeline)
    evaluation: dict | None  # ``evaluation`` conventions (claid.evaluation.conventions)
    decode: Any  # claid.images.DecodeOptions
    regions: Any  # the region source: CutRegions or RegionsFromFile
    extraction: Any  # claid.engine.extraction_stage.ExtractionSettings
    index: Any  # claid.index.index_stage.IndexSettings
    queries: Any  # claid.descriptors.queries.QuerySettings
    search: Any  # claid.index.index_stage.SearchSettings
    rerank: Any  # claid.rerank.rerank_stage.RerankSettings
    baselines: Any  # claid.evaluation.baselines.BaselineSettings
    memory: Any  # claid.index.memory_estimate.MemorySettings
    report: Any  # claid.report.run_report.ReportSettings
    tracking: Any  # claid.tracking.run_identity.TrackingSetup


def engine_precision(engine: Any) -> str:
    """``engine.precision`` in Lightning's full spelling (``32`` -> ``32-true``)."""
    value = str((engine or {}).get("precision", "32-true"))
    return _PRECISION_ALIASES.get(value, value)


def region_source(cfg) -> Any:
    """Where the run's regions come from: the one place that decides it.

    A ``cutter`` group whose ``_target_`` is a region source (a class with
    ``makes_regions = True``, e.g. ``cutter=from_file``) makes the regions itself and
    needs no backbone; any other cutter cuts the backbone's tokens.
    """
    from hydra.utils import get_class

    from claid.engine.cut_source import CutRegions

    cutter = plain(cfg.get("cutter"))
    descriptor = plain(cfg.get("descriptor"))
    target = cutter.get("_target_")
    if target and getattr(get_class(target), "makes_regions", False):
        source = get_class(target)
        settings = {k: v for k, v in cutter.items() if not k.startswith("_")}
        limit = (cfg.get("search") or {}).get("max_memory_gb")  # what a source may hold at once
        return source(node=cutter, descriptor=descriptor, memory_limit_gb=limit, **settings)
    return CutRegions(backbone=plain(cfg.get("backbone")), cutter=cutter, descriptor=descriptor)


def tracking_setup(cfg) -> Any:
    """How the job is tracked: the ``tracking`` group plus what names, tags and
    parametrises its MLflow run (readable even from a config that failed its checks,
    so that a failed job is still recorded)."""
    from claid.tracking.run_identity import TrackingSetup, run_params

    tracking = plain(cfg.get("tracking"))
    return TrackingSetup(
        tracker={k: v for k, v in tracking.items() if not k.startswith("_")},
        params=run_params(plain(cfg)),
        components=component_names(cfg),
        rerank=tuple(plain(cfg.get("rerank")) or ()),
        dataset_root=(cfg.get("dataset") or {}).get("root"),
    )


def component_names(cfg) -> dict[str, str]:
    """What each component group ran, read off the config: a model name, a cutter
    name, an index factory, else the target's class or function name."""

    def name_of(group: str) -> str:
        node = cfg.get(group) or {}
        for key in ("model_name", "cutter", "factory"):
            if node.get(key):
                return str(node[key])
        return str(node.get("_target_", "?")).rsplit(".", 1)[-1].removeprefix("load_")

    return {g: name_of(g) for g in ("dataset", "backbone", "cutter", "descriptor", "index")}


#: The backbone AMES's local descriptors are read from (DINOv2 ViT-B/14 with registers).
LOCAL_BACKBONE = "dinov2_vitb14_reg"


def local_backbone(cfg, methods: dict) -> dict | None:
    """The backbone node ``rerank=ames`` extracts local descriptors with: the run's own
    when it is DINOv2 ViT-B/14 with registers, else ``conf/backbone/dinov2_vitb14_reg.yaml``
    with ``rerank.ames.pretrained`` (None without AMES)."""
    if "ames" not in methods:
        return None
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[2] / "conf" / "backbone" / f"{LOCAL_BACKBONE}.yaml"
    wanted = plain(OmegaConf.load(conf))
    own = plain(cfg.get("backbone"))
    if own.get("model_name") == wanted.get("model_name"):
        return own
    return {**wanted, "pretrained": bool(methods["ames"].pretrained)}


def run_settings(cfg) -> RunSettings:
    """Each stage's settings from the composed config (checked first: a bad value is a
    one-line SettingsError naming its key, before any work)."""
    from claid.descriptors.queries import QuerySettings
    from claid.engine.extraction_stage import ExtractionSettings
    from claid.evaluation.baselines import BaselineSettings
    from claid.images import DecodeOptions
    from claid.index.index_stage import IndexSettings, SearchSettings
    from claid.index.memory_estimate import memory_settings
    from claid.report.run_report import ReportSettings
    from claid.rerank.rerank_stage import RerankSettings
    from claid.rerank.settings import parse_rerank

    check_settings(cfg)
    engine = plain(cfg.engine)
    search = SearchSettings.from_node(plain(cfg.search))
    index_node = {k: v for k, v in plain(cfg.index).items() if k not in SEARCH_KEYS}
    k = cfg.index.get("k")
    seed = int(cfg.seed)
    descriptor = plain(cfg.descriptor)
    cache = plain(cfg.get("cache"))
    store = plain(cfg.get("store"))
    return RunSettings(
        cache_dir=Path(cfg.paths.cache_dir),
        dataset=plain(cfg.dataset),
        evaluation=plain(cfg.get("evaluation")) or None,
        decode=DecodeOptions.from_config(cfg.get("images")),
        regions=region_source(cfg),
        extraction=ExtractionSettings(
            engine={key: v for key, v in engine.items() if key not in RUN_KEYS},
            precision=engine_precision(engine),
            store_dtype=store.get("dtype", "float16"),
            verify=store.get("verify", "checksums"),
            cache_tokens=bool(cache.get("tokens", False)),
            token_dtype=cache.get("token_dtype", "float32"),
            map_dtype=cache.get("map_dtype", "float32"),
        ),
        index=IndexSettings(node=index_node, seed=seed, k=k, descriptor=descriptor),
        queries=QuerySettings(descriptor=descriptor, accelerator=engine.get("accelerator", "cpu"),
                              devices=engine.get("devices", 1), precision=engine.get("precision", "32-true")),
        search=search,
        rerank=RerankSettings(methods=(methods := parse_rerank(cfg.get("rerank"))), k=k,
                              memory_gb=search.memory_gb, descriptor=descriptor,
                              local_backbone=local_backbone(cfg, methods)),
        baselines=BaselineSettings(index=index_node, k=k, seed=seed, shuffle_draws=search.shuffle_draws,
                                   global_baseline=search.global_baseline, memory_gb=search.memory_gb),
        memory=memory_settings(index=plain(cfg.index), descriptor_dim=descriptor.get("dim"), search=search,
                               stored_dtype=store.get("dtype", "float16")),
        report=ReportSettings(save_top=search.save_top, whole_image_region=search.whole_image_region, k=k,
                              backbone=plain(cfg.get("backbone")), descriptor=descriptor,
                              targets={g: str((cfg.get(g) or {}).get("_target_", ""))
                                       for g in ("dataset", "backbone", "cutter", "descriptor", "index")}),
        tracking=tracking_setup(cfg),
    )
