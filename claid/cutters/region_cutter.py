"""The Hydra-configured shell around ``cut_regions``: PatchGrid -> RegionTree.

Selected by ``conf/cutter/{ksums,ncut,fixed_depth}.yaml``; every parameter is an
explicit keyword, so a misspelled config key fails at instantiation.
"""

from __future__ import annotations

from typing import Any

from claid.cutters.hierarchy import CutSettings, cut_settings_regions
from claid.structures import PatchGrid, RegionTree


class RegionCutter:
    """Decomposes one image's PatchGrid into a RegionTree with fixed settings.

    Keyword arguments are those of ``claid.cut_regions`` (see ``CutSettings``);
    they are checked here, once, rather than on every image. Instances hold no
    state besides the settings, so one cutter may serve a thread pool (the numba
    kernels release the GIL).
    """

    def __init__(
        self,
        *,
        cutter: str = "ksums",
        tau1: float = 0.97,
        tau2: float = 0.2,
        alpha: float = 0.2,
        energy_quantile: float = 0.3,
        min_patches: int = 15,
        init: str = "seed",
        seed: int = 0,
        max_passes: int = 500,
        max_depth: int | None = None,
        filter_dummies: bool = True,
        count_diagonal: bool = False,
    ) -> None:
        self.settings = CutSettings(
            cutter=cutter,
            tau1=tau1,
            tau2=tau2,
            alpha=alpha,
            energy_quantile=energy_quantile,
            min_patches=min_patches,
            init=init,
            seed=seed,
            max_passes=max_passes,
            max_depth=max_depth,
            filter_dummies=filter_dummies,
            count_diagonal=count_diagonal,
        )

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
