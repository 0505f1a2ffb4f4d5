"""PatchGrids read from an earlier region store instead of a backbone forward.

A cutter sweep over one dataset and backbone recomputes the same detector tokens
for every cutter setting; a store written with ``keep_tokens=True`` already holds
them. ``CachedTokens`` is the handle the extraction's data loader uses to read
them: it travels to the decoding workers (pickled without the open store, which
each worker reopens on first use, so no memory map crosses a process boundary)
and answers, per image, whether tokens are cached and what they are.
"""

from __future__ import annotations

from collections.abc import Iterable

from claid.store import RegionStore
from claid.structures import PatchGrid

__all__ = ["CachedTokens"]


class CachedTokens:
    """The cached PatchGrids of ``image_ids`` in ``store``, restricted to those it has.

    Args:
        store: a region store written with ``keep_tokens=True`` (fully or partly).
        image_ids: the images the extraction will process.

    Attributes:
        store_dir: the store's directory.
        image_ids: frozenset of the requested ids whose tokens are cached.
        skipped: requested id -> reason, for images the store recorded as skipped
            (the same backbone could not use them; see ``extract_regions``).
    """

    def __init__(self, store: RegionStore, image_ids: Iterable[str]) -> None:
        if not isinstance(store, RegionStore):
            raise ValueError(f"tokens_from must be a RegionStore, got {type(store).__name__}")
        requested = list(image_ids)
        self.store_dir = store.store_dir
        self.image_ids = frozenset(i for i in requested if store.has_tokens(i))
        store_skips = dict(store.skipped)
        self.skipped = {i: store_skips[i] for i in requested if i in store_skips}
        self._store: RegionStore | None = store

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.image_ids

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_store"] = None  # reopened lazily: memory maps do not pickle
        return state

    def patch_grid(self, image_id: str) -> PatchGrid:
        """The cached PatchGrid of one image (float32 tokens, grid, patch size, scale
        and original image size, as the backbone produced them)."""
        if image_id not in self.image_ids:
            raise KeyError(f"no cached tokens for {image_id!r} in {self.store_dir}")
        if self._store is None:
            self._store = RegionStore.open(self.store_dir)
        return self._store.patch_grid(image_id)
