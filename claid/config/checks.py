"""The config-wide checks, before any work: a bad value is one line naming its full key
(:class:`claid.config.rules.SettingsError`). :func:`check_group_keys` refuses keys that the component a config group
builds does not take (a misspelled key is an error, never silently ignored);
:func:`check_settings` runs every check.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable

from claid.config.rules import (
    SettingsError,
    at_least,
    boolean,
    field_rules,
    one_of,
    positive,
    problem_of,
)

#: Keys of the ``engine`` group that the run applies itself (claid/threads.py), not the extraction.
RUN_KEYS = ("threads",)
#: Keys of the ``index`` group read by the search, not by ``build_index``.
SEARCH_KEYS = ("k",)
#: Hydra's own instantiation keys, never passed to the target.
_HYDRA_KEYS = frozenset({"_target_", "_partial_", "_convert_", "_recursive_", "_args_"})


def check_group_keys(group: str, node, extra: Iterable[str] = ()) -> None:
    """Refuse keys of config group ``group`` that its ``_target_`` does not accept.

    Args:
        group: the group's name as the user writes it (``cutter``, ``index``...).
        node: the group's config (mapping with ``_target_``). A target that takes
            ``**settings`` is checked against the dataclass it names in its
            ``SETTINGS`` attribute; one without (or a node without ``_target_``) is not.
        extra: keys the pipeline itself reads from the group (e.g. ``index.k``).
    Raises:
        SettingsError: ``<group>.<key> is not a setting of <target>; known: ...``.
    """
    from hydra.utils import get_method

    target = node.get("_target_") if node is not None else None
    if not target:
        return
    try:
        obj = get_method(target)
    except Exception as err:  # hydra raises ImportError or ValueError variants
        raise SettingsError(f"{group}._target_: cannot import {target!r} ({err})") from None
    settings_type = getattr(obj, "SETTINGS", None)  # a component taking **settings names them
    if dataclasses.is_dataclass(settings_type):
        known = {f.name for f in dataclasses.fields(settings_type)}
    else:
        parameters = inspect.signature(obj).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return
        known = {p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    known |= set(extra)
    unknown = sorted(k for k in node.keys() if k not in known and k not in _HYDRA_KEYS)
    if unknown:
        raise SettingsError(
            f"{group}.{unknown[0]} is not a setting of {target}"
            + (f" (nor {', '.join(unknown[1:])})" if len(unknown) > 1 else "")
            + f"; known: {', '.join(sorted(known))}"
        )


def check_rerank_settings(node) -> None:
    """Refuse an unknown ``rerank.*`` method or a bad value of one (claid/rerank/settings.py)."""
    from claid.rerank.settings import parse_rerank

    parse_rerank(node)


def _rerank_section(method: str, node) -> str | None:
    from claid.rerank.settings import section_problem

    return section_problem(method, node)


# ----------------------------------------------------------------------------- values
#: dtypes the region store and the token cache can hold (numpy names).
STORED_DTYPES = ("float16", "float32")


def _rerank_rules() -> dict[str, object]:
    from claid.rerank.settings import ORDER

    return {f"rerank.{method}": (lambda v, m=method: _rerank_section(m, v)) for method in ORDER}


def _cut_rules() -> dict[str, object]:
    from claid.cutters.hierarchy import CutSettings

    return {f"cutter.{name}": rule for name, rule in field_rules(CutSettings).items()}


#: Range rules by full key. A key a config does not have is not checked (a group
#: variant may lack it), and a key that is not listed is left to its component.
#: The cutter's ranges are CutSettings' field rules (claid/cutters/hierarchy.py),
#: written there once; ``search.*`` are SearchSettings' (claid/index/index_stage.py).
VALUE_RULES: dict[str, object] = {
    **_cut_rules(),
    "engine.batch_size": at_least(1),
    "engine.shard_size": at_least(1),
    "engine.num_workers": at_least(0, optional=True),  # null: from the CPU affinity
    "engine.cut_workers": at_least(0, optional=True),
    "engine.cut_queue": at_least(1),
    "engine.cut_pool": one_of("thread", "process"),
    "engine.num_nodes": at_least(1),
    "engine.profile": boolean,
    "engine.accelerator": one_of("cpu", "gpu", "cuda", "mps", "auto"),
    "backbone.patch_size": at_least(1),
    "backbone.embed_dim": at_least(1),
    "backbone.seed": at_least(0),
    "backbone.short_side": at_least(1, optional=True),
    "backbone.max_long_side": at_least(1, optional=True),
    "backbone.native_below": at_least(0),
    "backbone.pretrained": boolean,
    "descriptor.max_long_side": at_least(1, optional=True),
    "descriptor.dim": at_least(1),
    "descriptor.seed": at_least(0),
    "descriptor.gem_p": positive(),
    "descriptor.pooling": one_of("gem", "max", "mean"),
    "descriptor.query": one_of("crop", "pool"),
    "descriptor.mask_pooling": boolean,
    "descriptor.max_text_length": at_least(1),
    "index.k": at_least(1, optional=True),
    "index.nprobe": at_least(1, optional=True),
    "index.ef_search": at_least(1, optional=True),
    "index.train_size": at_least(1, optional=True),
    "index.whitening_dim": at_least(1, optional=True),
    "index.refine_factor": positive(optional=True),
    "index.whitening": one_of("none", "database", "file"),
    "store.dtype": one_of(*STORED_DTYPES),
    "store.verify": one_of("checksums", "sizes"),
    "cache.tokens": boolean,
    "cache.token_dtype": one_of(*STORED_DTYPES),
    "cache.map_dtype": one_of(*STORED_DTYPES),
    **_rerank_rules(),
}


def check_values(cfg, rules: dict[str, object] | None = None) -> None:
    """Refuse the first config value outside its range, by its full key.

    Args:
        cfg: the composed config (a mapping of groups).
        rules: full key -> rule (``value -> None`` or what is wrong); default
            :data:`VALUE_RULES`.
    Raises:
        SettingsError: e.g. ``engine.batch_size must be >= 1 (got 0)``.
    """
    for key, rule in (VALUE_RULES if rules is None else rules).items():
        group, _, name = key.partition(".")
        node = cfg.get(group) if hasattr(cfg, "get") else None
        if node is None or not hasattr(node, "keys") or name not in node:
            continue
        value = node.get(name)
        problem = rule(value)  # type: ignore[operator]
        if problem:
            raise SettingsError(f"{key} {problem} (got {value!r})")


def checked_values(values: dict[str, object]) -> None:
    """Apply :data:`VALUE_RULES` to ``{full key: value}`` (a stage's settings checked
    with the rules of the config keys they come from)."""
    for key, value in values.items():
        message = problem_of(VALUE_RULES[key], key, value)
        if message:
            raise SettingsError(message)


def check_model_names(cfg, groups: Iterable[str] = ("backbone", "descriptor")) -> None:
    """Refuse a ``<group>.model_name`` that timm does not know (architecture and
    pretrained tag), from timm's registry alone: nothing is downloaded or built.

    Raises:
        SettingsError: ``backbone.model_name: timm has no model 'vit_bogus' ...``.
    """
    for group in groups:
        node = cfg.get(group)
        if node is None or not hasattr(node, "keys") or "model_name" not in node:
            continue
        name = node.get("model_name")
        if not isinstance(name, str) or not name:
            raise SettingsError(f"{group}.model_name must be a timm model name (got {name!r})")
        from claid.models.weights import check_timm_name

        try:
            check_timm_name(name)
        except ValueError as err:
            raise SettingsError(f"{group}.model_name: {err}") from None


#: Config groups that build an object (their keys are checked against the target).
BUILT_GROUPS = ("dataset", "backbone", "cutter", "descriptor", "index", "engine", "tracking")


def check_settings(cfg) -> None:
    """Every check that needs no data and no network, before hours of extraction:
    unknown keys in any group that builds an object, value ranges and choices
    (:data:`VALUE_RULES`), how images are decoded, timm model names, ``search.*``
    and ``rerank.*``.

    Raises:
        SettingsError: the first problem, one line naming its full key.
    """
    from claid.images import DecodeOptions
    from claid.index.index_stage import SearchSettings

    read_by_the_run = {"index": SEARCH_KEYS, "engine": RUN_KEYS}  # not the target's keywords
    for group in BUILT_GROUPS:
        check_group_keys(group, cfg.get(group), read_by_the_run.get(group, ()))
    check_values(cfg)
    try:
        DecodeOptions.from_config(cfg.get("images"))
    except ValueError as err:
        raise SettingsError(str(err)) from None
    check_model_names(cfg)
    from claid.artifacts import plain

    SearchSettings.from_node(plain(cfg.search))
    check_rerank_settings(cfg.get("rerank"))
