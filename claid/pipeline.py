"""``run(cfg)``: the stages of one experiment, top to bottom.

    dataset -> extract_stage (regions in a RegionStore) -> index_stage (FAISS)
    -> query_stage (one vector per query) -> search (Ranking per query)
    -> evaluate (Scores) -> metrics.json, pictures, MLflow

Every stage that costs real time writes an artifact under ``paths.cache_dir`` named
by a readable prefix and a hash of its own and its upstream configuration, and skips
the work when the artifact is already there. So a sweep over index or search
parameters reuses the extracted regions, and a sweep over the cutter reuses the
backbone tokens when ``cache.tokens`` is on (conf/config.yaml says why it is off by
default).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from claid.store import config_hash, write_json_atomic
from claid.structures import Benchmark, Ranking

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


# ----------------------------------------------------------------------------- helpers
def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """np.save through a temporary file and a rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def write_json(path: Path, payload: Any) -> Path:
    """Write JSON atomically (the store's temp file + rename), numpy values included."""
    write_json_atomic(str(path), json.loads(json.dumps(payload, default=_json_default)))
    return Path(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _plain(cfg: DictConfig | dict | None) -> dict:
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def database_key(bench: Benchmark) -> dict:
    """What identifies the database images of a benchmark: the key of every artifact
    computed from them alone (regions, whole-image vectors, cached tokens), so that
    another query split of the same collection (INSTRE-M, synthetic ``split``, ILIAS
    text vs image queries) reuses them."""
    import hashlib

    images = "\n".join(bench.database).encode()
    return {
        "name": bench.name,
        "root": str(Path(bench.root).resolve()),
        "images": hashlib.sha1(images).hexdigest()[:16],
    }


def dataset_key(bench: Benchmark) -> dict:
    """What identifies the images and the queries of a benchmark (query artifacts)."""
    import hashlib

    queries = json.dumps(
        [[q.qid, q.image, q.box, q.text] for q in bench.queries], default=_json_default
    ).encode()
    return {**database_key(bench), "queries": hashlib.sha1(queries).hexdigest()[:16]}


def build(node: DictConfig) -> Any:
    """``hydra.utils.instantiate`` that lets claid's own errors through unwrapped, so a
    missing dataset or missing weights reads as the loader wrote it (where to get
    it, the layout, the cache path) rather than as Hydra's wrapper."""
    from hydra.errors import InstantiationException

    try:
        return instantiate(node)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (FileNotFoundError, ValueError, RuntimeError)):
            raise cause from None
        raise


def _region_descriptor_key(cfg: DictConfig) -> dict:
    """The descriptor settings that shape database region vectors: everything but
    how queries are described (``query``), so switching crop/pool reuses the store."""
    return {k: v for k, v in _plain(cfg.descriptor).items() if k != "query"}


@dataclass
class _Components:
    """Builds the networks only when a stage really needs them (cached stages don't)."""

    cfg: DictConfig
    _built: dict = field(default_factory=dict)

    def get(self, name: str) -> Any:
        if name not in self._built:
            log.info("building %s from config", name)
            self._built[name] = build(self.cfg[name])
        return self._built[name]


@dataclass
class RunResult:
    """What ``run`` returns: the run dir, the flat metrics and where artifacts are."""

    run_dir: Path
    metrics: dict[str, float]
    artifacts: dict[str, str]
    report: dict


# ----------------------------------------------------------------------------- stages
def extract_stage(cfg: DictConfig, bench: Benchmark, parts: _Components, cache_dir: Path):
    """Detect and describe the regions of every database image (resumable).

    Returns the opened ``RegionStore`` at ``<cache>/regions-<hash>``.
    """
    from claid.engine import extract_regions
    from claid.store import RegionStore

    key = {
        "dataset": database_key(bench),
        "backbone": _plain(cfg.backbone),
        "cutter": _plain(cfg.cutter),
        "descriptor": _region_descriptor_key(cfg),
        "dtype": cfg.store.dtype,
    }
    store_dir = cache_dir / f"regions-{config_hash(key)}"
    if store_dir.exists():
        store = RegionStore.open(str(store_dir))
        done = set(store.image_ids) | {image for image, _ in store.skipped}
        if done >= set(bench.database):
            log.info("reusing region store %s", store_dir)
            return store
    images = [(image_id, bench.path(image_id)) for image_id in bench.database]
    tokens_from, backbone = None, None
    if cfg.cache.tokens:
        from claid.store import find_token_store

        match = {"dataset": key["dataset"], "backbone": key["backbone"]}
        tokens_from = find_token_store(
            str(cache_dir), match, image_ids=bench.database, exclude=[str(store_dir)]
        )
    if tokens_from is not None:
        cached = set(tokens_from.token_image_ids()) | {image for image, _ in tokens_from.skipped}
        log.info("reusing backbone tokens of %s for %d images", tokens_from.store_dir, len(cached))
        if not cached >= set(bench.database):
            backbone = parts.get("backbone")
    else:
        backbone = parts.get("backbone")
    return extract_regions(
        images,
        backbone=backbone,
        cutter=parts.get("cutter"),
        descriptor=parts.get("descriptor"),
        store_dir=str(store_dir),
        config=key,
        dtype=cfg.store.dtype,
        keep_tokens=bool(cfg.cache.tokens),
        token_dtype=cfg.cache.token_dtype,
        tokens_from=tokens_from,
        **{k: v for k, v in _plain(cfg.engine).items() if k != "threads"},  # threads: claid/threads.py
    )


def whole_image_stage(
    cfg: DictConfig, bench: Benchmark, store, parts: _Components, cache_dir: Path
) -> np.ndarray:
    """One descriptor per processed database image, pooled over the whole image
    (the global baseline, and the optional extra "whole image" region).

    The extraction stage stores them beside the regions (pooled from the same
    feature map); only a store written before that needs this second pass.

    Returns (n_images, D) float32 in ``store.image_ids`` order.
    """
    from claid.images import load_image

    stored = store.whole_image_vectors(np.float32)
    if stored is not None:
        return stored
    key = {"dataset": database_key(bench), "descriptor": _region_descriptor_key(cfg), "images": store.image_ids}
    path = cache_dir / f"wholeimage-{config_hash(key)}.npy"
    if path.exists():
        return np.load(path)
    descriptor = parts.get("descriptor")
    sizes = store.image_sizes()
    rows = []
    for image_id, (height, width) in zip(store.image_ids, sizes):
        image = load_image(bench.path(image_id))
        box = np.array([[0, 0, width, height]], dtype=np.float32)
        rows.append(descriptor.describe(image, box)[0])
    vectors = np.stack(rows).astype(np.float32) if rows else np.zeros((0, descriptor.dim), np.float32)
    atomic_save_npy(path, vectors)
    return vectors


@dataclass
class RegionTable:
    """All searchable regions: rows of ``vectors`` with their image and box."""

    vectors: np.ndarray  # (N, D) float32
    region_image: np.ndarray  # (N,) int64 index into image_ids
    boxes: np.ndarray  # (N, 4) float32 original pixels
    image_ids: list[str]


def region_table(store, whole_image: np.ndarray | None) -> RegionTable:
    """The store's regions, plus one whole-image region per image when ``whole_image``
    (n_images, D) is given."""
    vectors = np.asarray(store.vectors(), dtype=np.float32)
    region_image = np.asarray(store.region_image(), dtype=np.int64)
    boxes = np.asarray(store.boxes(), dtype=np.float32)
    if whole_image is not None:
        full = _full_boxes(store)
        vectors = np.concatenate([vectors.reshape(-1, whole_image.shape[1]), whole_image])
        region_image = np.concatenate([region_image, np.arange(len(full), dtype=np.int64)])
        boxes = np.concatenate([boxes.reshape(-1, 4), full])
    return RegionTable(vectors, region_image, boxes, list(store.image_ids))


def index_stage(cfg: DictConfig, table: RegionTable, upstream: dict, cache_dir: Path):
    """Build (or load) the FAISS index over ``table.vectors``."""
    from claid.index import RegionIndex, build_index

    params = {k: v for k, v in _plain(cfg.index).items() if k != "k"}
    params.setdefault("seed", int(cfg.seed))
    key = {"upstream": upstream, "index": params}
    index_dir = cache_dir / f"index-{config_hash(key)}"
    if (index_dir / "search.json").exists():
        log.info("reusing index %s", index_dir)
        return RegionIndex.load(str(index_dir)), index_dir
    index = build_index(table.vectors, **params)
    # search.json is written last: a folder without it is an interrupted build, redone
    index.save(index_dir, provenance={"key": key}, overwrite=True)
    save_search_table(index_dir, table, descriptor=_plain(cfg.descriptor), key=key)
    return index, index_dir


def save_search_table(index_dir: Path, table: RegionTable, descriptor: dict, key: dict) -> None:
    """Write what ``claid.search`` needs beside the index: which image and box each
    indexed row is, and the descriptor config that describes new queries."""
    index_dir.mkdir(parents=True, exist_ok=True)
    tmp = index_dir / f".regions.tmp-{os.getpid()}.npz"
    np.savez(tmp, region_image=table.region_image, boxes=table.boxes)
    os.replace(tmp, index_dir / "regions.npz")
    write_json(
        index_dir / "search.json",
        {"schema_version": SCHEMA_VERSION, "image_ids": table.image_ids, "descriptor": descriptor, "key": key},
    )


def load_query_image(bench: Benchmark, query):
    """A query's decoded image; DatasetFormatError naming the query when it cannot be
    decoded (a query cannot be skipped: the scores would change meaning)."""
    from claid.datasets import DatasetFormatError
    from claid.images import ImageError, load_image

    try:
        return load_image(bench.path(query.image))
    except ImageError as err:
        raise DatasetFormatError(
            f"query {query.qid!r} ({query.image}): {err.reason}; fix the file or drop the query"
        ) from err


def check_query_images(bench: Benchmark) -> None:
    """Decode every query image once, so a bad one stops a run before the extraction
    (the queries are few next to the database)."""
    for query in bench.queries:
        if query.image is not None:
            load_query_image(bench, query)


def query_stage(cfg: DictConfig, bench: Benchmark, parts: _Components, cache_dir: Path) -> np.ndarray:
    """One vector per query: image queries through ``describe_query``, text queries
    through the descriptor's ``encode_text`` (SigLIP's joint space).

    Returns (n_queries, D) float32 in ``bench.queries`` order.
    """
    mode = bench.protocol.get("query", "crop")
    described_as = cfg.descriptor.get("query")
    if mode in ("crop", "pool") and described_as is not None and mode != described_as:
        raise ValueError(
            f"dataset.query={mode} but descriptor.query={described_as}: set descriptor.query "
            "(the dataset follows it by default)"
        )
    key = {"dataset": dataset_key(bench), "descriptor": _plain(cfg.descriptor), "mode": mode}
    path = cache_dir / f"queries-{config_hash(key)}.npy"
    if path.exists():
        return np.load(path)
    descriptor = parts.get("descriptor")
    rows = []
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
    atomic_save_npy(path, vectors)
    return vectors


def search_stage(
    index, table: RegionTable, query_vectors: np.ndarray, queries: list, k: int | None
) -> list[Ranking]:
    """Region search -> image ranking (an image ranks at its best region), one
    Ranking per query, the query's own image excluded."""
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
    )


def shuffled(rankings: list[Ranking], seed: int | np.random.Generator) -> list[Ranking]:
    """The same ranked lists in random order (one draw of the chance baseline)."""
    rng = np.random.default_rng(seed)
    out = []
    for r in rankings:
        order = rng.permutation(len(r.images))
        images = np.asarray(r.images, dtype=object)[order].tolist()
        out.append(Ranking(r.qid, images, r.scores[order], r.boxes[order]))
    return out


# ----------------------------------------------------------------------------- run
def run(cfg: DictConfig, run_dir: str | Path | None = None) -> RunResult:
    """Run one experiment end to end and return its metrics.

    Args:
        cfg: the composed Hydra config (conf/config.yaml).
        run_dir: where metrics.json and pictures go (default: Hydra's run dir, else cwd).
    """
    from claid.evaluation import evaluate, scores_to_metrics
    from claid.tracking import tracker_for

    check_search_settings(cfg.search)  # before hours of extraction, not after
    run_dir = Path(run_dir or _hydra_run_dir() or os.getcwd())
    run_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cfg.paths.cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tracker = tracker_for(cfg)  # run name, tags, params, sweep parent: claid/tracking.py
    timing: dict[str, float] = {}
    parts = _Components(cfg)

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = fn()
        timing[f"time/{name}_s"] = round(time.perf_counter() - start, 3)
        log.info("%s: %.2f s", name, timing[f"time/{name}_s"])
        return value

    with tracker.run(tags={"run_dir": str(run_dir)}):
        bench: Benchmark = timed("dataset", lambda: build(cfg.dataset))
        # a query image that cannot be decoded stops the run now, not after the extraction
        timed("query_images", lambda: check_query_images(bench))
        store = timed("extract", lambda: extract_stage(cfg, bench, parts, cache_dir))
        whole = None
        want_whole = bool(cfg.search.whole_image_region) or bool(cfg.search.global_baseline)
        if want_whole and store.image_ids:
            whole = timed("whole_image", lambda: whole_image_stage(cfg, bench, store, parts, cache_dir))
        table = region_table(store, whole if cfg.search.whole_image_region else None)
        upstream = {"regions": Path(store.store_dir).name, "whole_image_region": bool(cfg.search.whole_image_region)}
        report, metrics = _new_report(cfg, bench, store)
        searchable = _searchable_queries(cfg, bench, report)
        family = bench.protocol.get("family", "none")
        index, rankings = None, []
        if len(table.vectors) and family != "detection":  # detection benchmarks only score regions
            index, index_dir = timed("index", lambda: index_stage(cfg, table, upstream, cache_dir))
            report["settings"]["index"] = str(index_dir)
        if searchable and index is not None and family != "none":
            queries_bench = replace(bench, queries=searchable)
            qvecs = timed("queries", lambda: query_stage(cfg, queries_bench, parts, cache_dir))
            rankings = timed("search", lambda: search_stage(index, table, qvecs, searchable, cfg.index.get("k")))
            scores = timed("evaluate", lambda: evaluate(rankings, queries_bench))
            metrics.update(scores_to_metrics(scores))
            report["scores"] = [_scores_dict(s) for s in scores]
            report["baselines"] = timed(
                "baselines", lambda: baseline_scores(cfg, queries_bench, rankings, qvecs, whole, store))
            report["settings"]["shuffle_repeats"] = _shuffle_repeats_of(cfg, rankings)
            for name, values in report["baselines"].items():
                metrics.update({f"baseline/{name}/{key}": v for key, v in values.items()})
        elif index is not None:
            log.info(
                "dataset %s has no queries to score: indexed only; search it with "
                "`python -m claid search --index-dir %s <image>`", bench.name, report["settings"]["index"],
            )
        if bench.gt_boxes or bench.gt_masks_file:
            metrics.update(timed("detection", lambda: detection_stage(store, bench, report)))
        metrics.update(timing)
        report["metrics"] = metrics
        report["timing"] = timing
        artifacts = {"metrics": str(write_json(run_dir / "metrics.json", report))}
        if rankings:
            saved = rankings_report(searchable, rankings, bench, int(cfg.search.save_top))
            artifacts["rankings"] = str(write_json(run_dir / "rankings.json", saved))
        artifacts.update(_figures(cfg, bench, store, rankings, run_dir, report))
        tracker.log_metrics(metrics)
        for path in artifacts.values():
            tracker.log_artifact(path)
        tracker.set_tags({"whole_image_region": str(bool(cfg.search.whole_image_region))})
    return RunResult(run_dir=run_dir, metrics=metrics, artifacts=artifacts, report=report)


def rankings_report(queries: list, rankings: list[Ranking], bench: Benchmark, top: int) -> dict:
    """Every query's ranked images as data (``rankings.json`` in the run dir): the
    query (image and box, or text), then the first ``top`` images with score, the
    localising box (original pixels) and whether the ground truth counts it relevant."""
    out = []
    for query, ranking in zip(queries, rankings):
        positives = set(query.positives)
        out.append({
            "qid": query.qid,
            "image": query.image,
            "box": None if query.box is None else [float(v) for v in query.box],
            "text": query.text,
            "results": [
                {"image": image, "score": round(float(score), 6),
                 "box": [round(float(v), 1) for v in box], "relevant": image in positives}
                for image, score, box in zip(ranking.images[:top], ranking.scores[:top], ranking.boxes[:top])
            ],
        })
    return {"schema_version": SCHEMA_VERSION, "dataset": bench.name, "top": top, "queries": out}


def _new_report(cfg: DictConfig, bench: Benchmark, store) -> tuple[dict, dict[str, float]]:
    """The run's report skeleton (what ran, on what, with which settings) and the
    count metrics."""
    per_image = float(store.num_regions) / max(1, len(store.image_ids))
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "dataset": bench.name,
        "protocol": bench.protocol,
        "settings": {
            "whole_image_region": bool(cfg.search.whole_image_region),
            "query": bench.protocol.get("query", "crop"),
            "k_regions": cfg.index.get("k"),
            "store": str(store.store_dir),
        },
        "counts": {
            "images": len(store.image_ids),
            "skipped": len(store.skipped),
            "regions": int(store.num_regions),
            "regions_per_image": per_image,
            "queries": len(bench.queries),
        },
        "skipped": [list(item) for item in store.skipped],
    }
    metrics = {
        "count/regions": float(store.num_regions),
        "count/regions_per_image": per_image,
        "count/images": float(len(store.image_ids)),
    }
    return report, metrics


def _searchable_queries(cfg: DictConfig, bench: Benchmark, report: dict) -> list:
    """Image queries, plus text queries when the descriptor can encode text; the
    report counts what was left out."""
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


def baseline_scores(
    cfg: DictConfig, bench: Benchmark, rankings: list[Ranking], query_vectors: np.ndarray, whole, store
) -> dict[str, dict[str, float]]:
    """The same queries scored two other ways: the rankings shuffled (chance) and,
    when whole-image vectors exist, one global descriptor per image."""
    from claid.evaluation import evaluate, scores_to_metrics
    from claid.index import build_index

    repeats = _shuffle_repeats_of(cfg, rankings)
    baselines = {"shuffled": shuffled_scores(rankings, bench, cfg.seed, repeats)}
    if cfg.search.global_baseline and whole is not None:
        table = RegionTable(whole, np.arange(len(whole)), _full_boxes(store), list(store.image_ids))
        ranked = search_stage(build_index(whole, factory="Flat"), table, query_vectors, bench.queries, None)
        baselines["global_descriptor"] = _retrieval_only(scores_to_metrics(evaluate(ranked, bench)))
    return baselines


#: Ranked entries shuffled and scored for the chance level at most (~10 s here).
SHUFFLE_BUDGET = 20_000_000


def shuffle_repeats(n_queries: int, draws: int, ranked_entries: int = 0) -> int:
    """How many times to shuffle every ranking so that about ``draws`` shuffled
    rankings are averaged (many repeats for a few queries, one for thousands),
    capped so that repeats x ``ranked_entries`` (the total length of the
    rankings) stays within :data:`SHUFFLE_BUDGET`; always at least one."""
    if draws < 1:
        raise ValueError(f"search.shuffle_draws must be >= 1, got {draws}")
    wanted = math.ceil(draws / max(1, n_queries))
    affordable = SHUFFLE_BUDGET // max(1, ranked_entries)
    return max(1, min(wanted, affordable))


class SettingsError(ValueError):
    """A config value the run cannot use; the message names the key."""


def check_search_settings(search: DictConfig) -> None:
    """Refuse ``search.*`` values the later stages cannot use (SettingsError naming the key)."""
    for key in ("shuffle_draws", "save_top"):
        value = search.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SettingsError(f"search.{key} must be an integer >= 1, got {value!r}")
    for key in ("whole_image_region", "global_baseline"):
        if not isinstance(search.get(key), bool):
            raise SettingsError(f"search.{key} must be true or false, got {search.get(key)!r}")


def _shuffle_repeats_of(cfg: DictConfig, rankings: list[Ranking]) -> int:
    entries = sum(len(r.images) for r in rankings)
    return shuffle_repeats(len(rankings), int(cfg.search.shuffle_draws), entries)


def shuffled_scores(rankings: list[Ranking], bench: Benchmark, seed: int, repeats: int) -> dict[str, float]:
    """Retrieval metrics of the same ranked lists in random order, averaged over
    ``repeats`` seeded shuffles: one shuffle of 20 queries is too noisy a chance level
    (30 single draws of mAP-50 ranged 0.021-0.091 on the default synthetic run)."""
    from claid.evaluation import evaluate, scores_to_metrics

    if repeats < 1:
        raise ValueError(f"shuffle repeats must be >= 1, got {repeats}")
    rng = np.random.default_rng(seed)
    draws = [
        _retrieval_only(scores_to_metrics(evaluate(shuffled(rankings, rng), bench)))
        for _ in range(repeats)
    ]
    return {key: float(np.mean([d[key] for d in draws])) for key in draws[0]}


def _full_boxes(store) -> np.ndarray:
    sizes = np.asarray(store.image_sizes(), dtype=np.float32).reshape(-1, 2)
    boxes = np.zeros((len(sizes), 4), np.float32)
    boxes[:, 2], boxes[:, 3] = sizes[:, 1], sizes[:, 0]
    return boxes


def _scores_dict(scores) -> dict:
    return {"protocol": scores.protocol, "values": scores.values, "settings": scores.settings}


def _retrieval_only(metrics: dict[str, float]) -> dict[str, float]:
    """Drop the localisation entries (they do not change with the ranking order)."""
    return {k: v for k, v in metrics.items() if not k.startswith("loc")}


class _StoreMasks:
    """image id -> (R, H, W) pixel masks of its regions, decoded on access (a
    read-only mapping, so a whole collection's masks never sit in memory)."""

    def __init__(self, store) -> None:
        self.store = store
        self.region_image = np.asarray(store.region_image())
        self.index = {image_id: i for i, image_id in enumerate(store.image_ids)}

    def get(self, image_id: str, default=None):
        if image_id not in self.index:
            return default
        rows = np.flatnonzero(self.region_image == self.index[image_id])
        if len(rows) == 0:
            return np.zeros((0, 1, 1), bool)
        return np.stack([self.store.mask_pixels(int(r)) for r in rows])

    def __getitem__(self, image_id: str):
        value = self.get(image_id)
        if value is None:
            raise KeyError(image_id)
        return value


def detection_stage(store, bench: Benchmark, report: dict) -> dict[str, float]:
    """The detector against the ground truth, every number named by its protocol:
    the lab's localisation mIoU (standard and enclosing IoU), the any-match recall
    curve (boxes; masks too when the dataset has mask annotations), greedy AR@100
    and CorLoc (the first, i.e. largest-scale, region of each image)."""
    from claid.evaluation import (
        CocoMasks,
        average_recall_greedy,
        corloc,
        detection_scores,
        recall_vs_iou,
        score_localization,
        scores_to_metrics,
    )

    region_image = np.asarray(store.region_image())
    boxes = np.asarray(store.boxes(), dtype=np.float32)
    pred = {image_id: boxes[region_image == i] for i, image_id in enumerate(store.image_ids)}
    scores = []
    if bench.gt_boxes:
        gt = {k: v for k, v in bench.gt_boxes.items() if k in pred or k in bench.database}
        scores += [score_localization(pred, gt, iou=kind) for kind in ("standard", "enclosing")]
        curve = recall_vs_iou(pred, gt, kind="box")
        first = {k: v[:1] for k, v in pred.items() if len(v)}
        scores.append(
            detection_scores(
                recall_curve=curve,
                recall_kind="box",
                greedy=average_recall_greedy(pred, gt, n=100),
                corloc_value=corloc(first, gt),
            )
        )
        report["recall_vs_iou"] = {"rule": "any-match (lab), boxes", "iou": list(curve), "recall": list(curve.values())}
    if bench.gt_masks_file:
        gt_masks = CocoMasks(bench.gt_masks_file, include_crowd=bool(bench.protocol.get("include_crowd", True)))
        gt_masks = {k: gt_masks[k] for k in store.image_ids if k in gt_masks}
        curve = recall_vs_iou(_StoreMasks(store), gt_masks, kind="mask")
        scores.append(detection_scores(recall_curve=curve, recall_kind="mask"))
        report["recall_vs_iou"] = {"rule": "any-match (lab), masks", "iou": list(curve), "recall": list(curve.values())}
    report.setdefault("scores", []).extend(_scores_dict(s) for s in scores)
    return scores_to_metrics(scores)


def _figures(cfg, bench: Benchmark, store, rankings: list[Ranking], run_dir: Path, report: dict) -> dict[str, str]:
    """Hierarchy pictures, a results grid and the recall curve (best effort is not
    allowed to hide errors: a failing picture fails the run)."""
    from claid.figures import hierarchy_figure, recall_figure, results_grid_figure
    from claid.images import load_image
    from claid.tracking import figure_caption

    out: dict[str, str] = {}
    n_images = int(cfg.tracking.get("n_figure_images", 4))
    region_image = np.asarray(store.region_image())
    depth, parent = np.asarray(store.depth()), np.asarray(store.parent())
    caption = figure_caption(cfg, bench.name)  # run name and dataset in every title
    shown = 0
    for i, image_id in enumerate(store.image_ids):
        if shown >= n_images:
            break
        rows = np.flatnonzero(region_image == i)
        if len(rows) == 0:
            continue
        masks = store.masks(rows)
        path = run_dir / f"hierarchy_{shown}.png"
        hierarchy_figure(load_image(bench.path(image_id)), masks, depth[rows], path, title=image_id,
                         parent=parent[rows], caption=caption)
        out[f"hierarchy_{shown}"] = str(path)
        shown += 1
    n_queries = int(cfg.tracking.get("n_figure_queries", 6))
    image_queries = [q for q in bench.queries if q.image is not None][:n_queries]
    if rankings and image_queries:
        path = results_grid_figure(image_queries, rankings, lambda i: load_image(bench.path(i)), run_dir / "results_grid.png",
                                   caption=caption)
        out["results_grid"] = str(path)
    if "recall_vs_iou" in report:
        curve = report["recall_vs_iou"]
        path = recall_figure({"CLAID": (curve["iou"], curve["recall"])}, run_dir / "recall_vs_iou.png", title=caption)
        out["recall_vs_iou"] = str(path)
    return out


def _hydra_run_dir() -> str | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.output_dir
    except ValueError:
        return None

