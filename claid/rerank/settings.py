"""The ``rerank`` config group's settings, checked before any work.

``cfg.rerank`` holds one section per method it runs (``conf/rerank/*.yaml``; select
several with ``rerank=[dba,aqe]``); they run in a fixed order, database side first:
``dba`` (a new index), then ``aqe`` (the query), then ``diffusion`` (the ranking), then
the shortlist re-rankers, which re-order the head of the list they are given:
``superglobal`` (global vectors), ``ames`` (local descriptors).
An empty node (``rerank=none``) re-ranks nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

#: Methods in the order they run.
ORDER = ("dba", "aqe", "diffusion", "superglobal", "ames")
SAME_IMAGE = ("exclude", "include")
AGGREGATES = ("max", "sum")


@dataclass(frozen=True)
class AQESettings:
    n: int = 10
    alpha: float = 3.0


@dataclass(frozen=True)
class DBASettings:
    n: int = 10
    alpha: float = 3.0
    same_image: str = "exclude"
    block_rows: int = 4096


@dataclass(frozen=True)
class DiffusionSettings:
    kq: int = 10
    kd: int = 50
    truncation: int = 1000
    gamma: float = 3.0
    alpha: float = 0.99
    tol: float = 1e-6
    max_iter: int = 20
    same_image: str = "exclude"
    aggregate: str = "max"
    block_items: int = 128
    max_gb: float = 8.0
    max_regions: int | None = 200000


@dataclass(frozen=True)
class SuperGlobalSettings:
    m: int = 400
    k: int = 9
    beta: float = 0.15


#: AMES's published DINOv2 fusion values (github pavelsuma/ames README): (lambda, gamma)
AMES_FUSION = {False: (0.55, 0.30), True: (0.35, 0.10)}


@dataclass(frozen=True)
class AmesSettings:
    binarised: bool = False
    lam: float | None = None
    gamma: float | None = None
    num_rerank: int = 100
    query_k: int = 600
    database_k: int = 100
    nms: bool = False
    pretrained: bool = True
    checkpoint: str | None = None
    detector_checkpoint: str | None = None
    cache_dir: str | None = None
    seed: int = 0
    batch: int = 100

    @property
    def fusion(self) -> tuple[float, float]:
        """(lambda, gamma): the settings, or the published values of the variant."""
        lam, gamma = AMES_FUSION[self.binarised]
        return (lam if self.lam is None else self.lam, gamma if self.gamma is None else self.gamma)


SETTINGS = {"aqe": AQESettings, "dba": DBASettings, "diffusion": DiffusionSettings, "superglobal": SuperGlobalSettings,
            "ames": AmesSettings}
_OPTIONAL_INTS = ("max_regions",)
_BOOLEANS = ("binarised", "nms", "pretrained")
_OPTIONAL_TEXTS = ("checkpoint", "detector_checkpoint", "cache_dir")
_INTS = {"max_regions": 1, "n": 1, "block_rows": 1, "kq": 1, "kd": 2, "truncation": 1, "max_iter": 1, "block_items": 1, "m": 2, "k": 1, "num_rerank": 1, "query_k": 1,
         "database_k": 1, "seed": 0, "batch": 1}
_POSITIVE = ("alpha", "gamma", "tol", "max_gb", "beta")
_CHOICES = {"same_image": SAME_IMAGE, "aggregate": AGGREGATES}


def section_problem(method: str, node) -> str | None:
    """What is wrong with ``rerank.<method>`` (None when nothing): unknown keys,
    non-integers, values out of range. Used by ``claid.config.checks.VALUE_RULES``."""
    try:
        parse_section(method, node)
    except ValueError as err:
        return str(err)
    return None


def parse_section(method: str, node):
    """``rerank.<method>`` as its settings dataclass (missing keys: the defaults)."""
    kind = SETTINGS[method]
    values = dict(node or {})
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"has unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}")
    for key, value in values.items():
        if key in _OPTIONAL_INTS and value is None:
            continue
        if key in _BOOLEANS and not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
        if key in _OPTIONAL_TEXTS and value is not None and not isinstance(value, str):
            raise ValueError(f"{key} must be a path or null, got {value!r}")
        if method == "ames" and key in ("lam", "gamma"):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not (0 <= value <= 1 if key == "lam" else value > 0)):
                raise ValueError(f"{key} must be null (the published value) or a number "
                                 f"{'in [0, 1]' if key == 'lam' else '> 0'}, got {value!r}")
            continue
        if key in _INTS:
            if isinstance(value, bool) or not isinstance(value, int) or value < _INTS[key]:
                raise ValueError(f"{key} must be an integer >= {_INTS[key]}, got {value!r}")
        elif key in _POSITIVE:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{key} must be a number > 0, got {value!r}")
        elif key in _CHOICES and value not in _CHOICES[key]:
            raise ValueError(f"{key} must be one of {', '.join(_CHOICES[key])}, got {value!r}")
    if method == "diffusion":
        if not values.get("alpha", 0.99) < 1:
            raise ValueError(f"alpha must be < 1 (the solve diverges at 1), got {values['alpha']!r}")
        if values.get("kd", 50) >= values.get("truncation", 1000):
            raise ValueError("kd must be smaller than truncation")
    if method == "superglobal" and values.get("m", 400) <= values.get("k", 9):
        raise ValueError("m must be larger than k")
    return kind(**values)


def parse_rerank(node) -> dict:
    """``cfg.rerank`` -> {method: settings} in running order (empty: none).

    Raises:
        ValueError: an unknown method or a bad value, naming ``rerank.<key>``.
    """
    from claid.config.rules import SettingsError

    values = dict(node or {})
    unknown = sorted(set(values) - set(ORDER))
    if unknown:
        raise SettingsError(f"rerank.{unknown[0]} is not a re-ranking method; known: {', '.join(ORDER)} "
                            "(conf/rerank/*.yaml; combine with rerank=[dba,aqe])")
    out = {}
    for method in ORDER:
        if method in values:
            try:
                out[method] = parse_section(method, values[method])
            except ValueError as err:
                raise SettingsError(f"rerank.{method} {err}") from None
    return out


def as_dict(settings) -> dict:
    return dataclasses.asdict(settings)
