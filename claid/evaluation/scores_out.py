"""Scores out: a flat metric dict for MLflow and an atomic JSON file."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence

import numpy as np

from claid._version import __version__ as CLAID_VERSION
from claid.artifacts import atomic_write_bytes, schema_version
from claid.structures import Scores

__all__ = ["SCORES_SCHEMA_VERSION", "scores_to_metrics", "write_scores_json", "read_scores_json"]

SCORES_SCHEMA_VERSION = schema_version("scores")

# The characters MLflow accepts in a metric key (mlflow.utils.validation).
_METRIC_KEY = re.compile(r"[/\w.\- :]+")


def scores_to_metrics(scores: Sequence[Scores]) -> dict[str, float]:
    """Flatten to ``{"<protocol>/<value name>": value}``, e.g. "lab/mAP-50",
    "revisited/medium/mAP", "loc/mIoU-standard", ready for ``mlflow.log_metrics``.

    Raises ValueError on a key MLflow would refuse, a key produced twice, or a
    value that is not a finite number.
    """
    metrics: dict[str, float] = {}
    for score in scores:
        for name, value in score.values.items():
            key = f"{score.protocol}/{name}"
            if not _METRIC_KEY.fullmatch(key) or ".." in key or key.startswith("/"):
                raise ValueError(f"metric key {key!r} is not a valid MLflow metric name")
            if key in metrics:
                raise ValueError(
                    f"metric {key!r} appears twice; give the Scores distinct protocols"
                )
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"metric {key!r} is {value}")
            metrics[key] = value
    return metrics


def _jsonable(obj):
    if obj is None or isinstance(obj, str | bool | int | float):
        return obj
    # Mapping / Sequence also cover OmegaConf containers in a recorded protocol
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, set | frozenset):
        return [_jsonable(v) for v in sorted(obj)]
    if isinstance(obj, Sequence):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot write {type(obj).__name__} to scores JSON: {obj!r}")


def write_scores_json(scores: Sequence[Scores], path: str | os.PathLike) -> str:
    """Write the scores, their settings and the claid version to ``path``
    atomically (:func:`claid.artifacts.atomic_write_bytes`).

    Returns the path written.
    """
    path = os.fspath(path)
    document = {
        "schema_version": SCORES_SCHEMA_VERSION,
        "claid_version": CLAID_VERSION,
        "metrics": scores_to_metrics(scores),
        "scores": [
            {
                "protocol": s.protocol,
                "values": _jsonable(s.values),
                "settings": _jsonable(s.settings),
            }
            for s in scores
        ],
    }
    text = json.dumps(document, indent=2, allow_nan=False)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def read_scores_json(path: str | os.PathLike) -> list[Scores]:
    """Read a file written by ``write_scores_json`` back into ``Scores``."""
    with open(path) as f:
        document = json.load(f)
    version = document.get("schema_version")
    if version != SCORES_SCHEMA_VERSION:
        raise ValueError(
            f"{path}: scores schema version {version!r}, this claid reads {SCORES_SCHEMA_VERSION}"
        )
    return [
        Scores(protocol=s["protocol"], values=dict(s["values"]), settings=dict(s["settings"]))
        for s in document["scores"]
    ]
