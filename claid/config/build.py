"""Config groups -> objects: every group that builds something names it with
``_target_`` and is built here, the same way for all of them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


def build(node, **overrides: Any) -> Any:
    """``hydra.utils.instantiate(node, **overrides)`` that lets claid's own errors
    through unwrapped, so a missing dataset or missing weights reads as the loader
    wrote it (where to get it, the layout, the cache path) rather than as Hydra's
    wrapper."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **overrides)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (FileNotFoundError, ValueError, RuntimeError)):
            raise cause from None
        raise


@dataclass
class Components:
    """The run's networks (``backbone``, ``cutter``, ``descriptor``), each built from
    its config group's node on first use only, so a run whose stages are all cached
    builds none.

    Args:
        nodes: group name -> its resolved node (a mapping with ``_target_``).
    """

    nodes: Mapping[str, Any]
    _built: dict = field(default_factory=dict)

    def get(self, name: str) -> Any:
        if name not in self._built:
            log.info("building %s from config", name)
            self._built[name] = build(self.nodes[name])
        return self._built[name]
