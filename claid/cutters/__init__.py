"""Region detector: PatchGrid -> RegionTree (paper Sec. III, Algorithm 1).

Modules, in the order the algorithm uses them:
    affinity       token checks, unit tokens, Gram matrix, high-energy set H
    connectivity   in-node degrees and cbar (Eq. 8/9)
    ksums          k-sums bisection (Eq. 1-4, seeds of Sec. III-B)
    ncut           TokenCut-style normalised-cut bisection
    components     getObject: 8-connected components
    hierarchy      Algorithm 1 (``cut_regions``, ``decompose``)
    region_cutter  Hydra shell (``RegionCutter``)
    planted        synthetic token maps with planted objects (tests, benchmark)
    reference      slow per-patch Python oracle of the same algorithm
"""

from claid.cutters.hierarchy import CutSettings, NodeRecord, cut_regions, decompose
from claid.cutters.region_cutter import RegionCutter

__all__ = ["CutSettings", "NodeRecord", "RegionCutter", "cut_regions", "decompose"]
