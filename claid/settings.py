"""Settings checked before any work: a bad value is one line naming its full key.

``SettingsError`` is what ``run.py`` prints as ``error: <message>`` without a
traceback. :func:`check_group_keys` refuses keys that the component a config group
builds does not take (a misspelled key is an error, never silently ignored);
:func:`check_search_settings` checks ``search.*``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable

#: Hydra's own instantiation keys, never passed to the target.
_HYDRA_KEYS = frozenset({"_target_", "_partial_", "_convert_", "_recursive_", "_args_"})


class SettingsError(ValueError):
    """A config value the run cannot use; the message names the key."""


def check_group_keys(group: str, node, extra: Iterable[str] = ()) -> None:
    """Refuse keys of config group ``group`` that its ``_target_`` does not accept.

    Args:
        group: the group's name as the user writes it (``cutter``, ``index``...).
        node: the group's config (mapping with ``_target_``); a node without
            ``_target_`` or whose target takes ``**kwargs`` is not checked.
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


def check_search_settings(search) -> None:
    """Refuse ``search.*`` values the later stages cannot use (SettingsError naming the key)."""
    for key in ("shuffle_draws", "save_top"):
        value = search.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SettingsError(f"search.{key} must be an integer >= 1, got {value!r}")
    memory = search.get("memory_gb")
    if isinstance(memory, bool) or not isinstance(memory, (int, float)) or not memory > 0:
        raise SettingsError(f"search.memory_gb must be a number > 0 (GiB), got {memory!r}")
    limit = search.get("max_memory_gb")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))
                              or not limit > 0):
        raise SettingsError(f"search.max_memory_gb must be null or a number > 0 (GiB), got {limit!r}")
    per_image = search.get("regions_per_image")
    if isinstance(per_image, bool) or not isinstance(per_image, int) or per_image < 1:
        raise SettingsError(f"search.regions_per_image must be an integer >= 1, got {per_image!r}")
    for key in ("whole_image_region", "global_baseline"):
        if not isinstance(search.get(key), bool):
            raise SettingsError(f"search.{key} must be true or false, got {search.get(key)!r}")
