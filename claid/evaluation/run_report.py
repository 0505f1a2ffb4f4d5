"""A run's report (``metrics.json``) and saved rankings (``rankings.json``)."""

from __future__ import annotations

from typing import Any

from claid.artifacts import schema_version
from claid.structures import Ranking

SCHEMA_VERSION = schema_version("report")


def new_report(cfg, bench, store) -> tuple[dict, dict[str, float]]:
    """The run's report skeleton (what ran, on what, with which settings) and the
    count metrics (``count/regions``, ``count/regions_per_image``, ``count/images``)."""
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
            "image_root": str(bench.root),  # what the image ids are relative to (claid serve)
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


def rankings_report(queries: list, rankings: list[Ranking], bench, top: int) -> dict:
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
