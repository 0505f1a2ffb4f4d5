"""claid: class-agnostic instance-level descriptors for visual instance search.

Data flow (one module per stage):
    image -> backbones (PatchGrid) -> cutters (RegionTree) -> descriptors
    -> store -> index -> search (Ranking) -> evaluation (Scores)

The heavy submodules (torch, faiss, mlflow) are imported lazily.
"""

from claid._version import __version__

__all__ = ["cut_regions", "search", "search_text", "__version__"]


def __getattr__(name: str):
    if name == "cut_regions":
        from claid.cutters import cut_regions

        return cut_regions
    if name in ("search", "search_text"):
        from claid import retrieval

        return getattr(retrieval, name)
    raise AttributeError(f"module 'claid' has no attribute {name!r}")
