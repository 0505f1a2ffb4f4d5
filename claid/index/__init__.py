"""Region index: FAISS inner-product search over region descriptors with optional
PCA-whitening, and region ranking -> image ranking (``conf/index/``).

    build_index(vectors, **cfg) -> RegionIndex      (train + add; save / load a folder)
    RegionIndex.search(queries, k) -> sims, ids     (regions)
    rank_images(sims, ids, ...) -> [Ranking]        (an image scores its best region)
    first_appearances(sims, ids, ...) -> rows       (the same rule, one query, O(k))
    search_images(index, queries, ...) -> [Ranking] (both, in query blocks)

Collections larger than memory: ``build_index(region_table(store, ...))`` streams the
store in chunks (``chunked_build.py``), exhaustive search reads the database once per
query block sized by ``search.memory_gb`` (``exact_search.py``), and
``memory_estimate.py`` stops a run that cannot fit before its extraction.

A whitening fitted on another dataset's store (the lab's protocol):
    python -m claid.index.fit_whitening STORE_DIR out.npz   then   whitening=file
"""

from claid.index.chunked_build import build_index
from claid.index.faiss_factory import training_points_needed
from claid.index.image_ranking import first_appearances, rank_images, rank_images_dense
from claid.index.image_search import search_images
from claid.index.region_index import RegionIndex
from claid.index.whitening import (
    apply_whitening,
    fit_pca_whitening,
    l2_normalize,
    load_whitening,
    save_whitening,
    whiten_and_normalize,
)

__all__ = [
    "RegionIndex",
    "apply_whitening",
    "build_index",
    "first_appearances",
    "fit_pca_whitening",
    "l2_normalize",
    "load_whitening",
    "rank_images",
    "rank_images_dense",
    "save_whitening",
    "search_images",
    "training_points_needed",
    "whiten_and_normalize",
]
