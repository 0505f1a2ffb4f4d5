"""The Hydra-configured shell around ``cut_regions``: PatchGrid -> RegionTree.

Selected by ``conf/cutter/{ksums,ncut,fixed_depth}.yaml``, which inherit every
default from ``conf/cutter/_base.yaml`` (a mirror of ``CutSettings``' defaults); the
keywords are ``CutSettings`` fields, so a misspelled config key fails at instantiation.
"""

from __future__ import annotations

from typing import Any

from claid.cutters.hierarchy import CutSettings, cut_settings_regions
from claid.structures import PatchGrid, RegionTree


class RegionCutter:
    """Decomposes one image's PatchGrid into a RegionTree with fixed settings.

    Keyword-only arguments are the fields of ``CutSettings`` (defaults there);
    they are checked here, once, rather than on every image. Instances hold no
    state besides the settings, so one cutter may serve a thread pool (the numba
    kernels release the GIL).
    """

    SETTINGS = CutSettings  # what **settings may hold (claid.config.checks.check_group_keys)

    def __init__(self, **settings: Any) -> None:
        # no defaults repeated here: CutSettings holds them, and rejects unknown keys
        self.settings = CutSettings(**settings)

    def __call__(self, patch_grid: PatchGrid) -> RegionTree:
        """Regions of one image; boxes in patch units of ``patch_grid.grid``
        (``patch_grid.patch_boxes_to_pixels`` maps them to original pixels)."""
        return cut_settings_regions(patch_grid.tokens, patch_grid.grid, self.settings)

    def config(self) -> dict[str, Any]:
        """The settings as a plain dict (for artifact names and provenance)."""
        return self.settings.as_dict()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"RegionCutter({args})"
