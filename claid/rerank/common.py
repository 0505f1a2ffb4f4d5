"""What every re-ranking shares: the index's whitened space, the store's vectors in
it, the list the protocol evaluates, and region scores -> image rankings.

* :func:`whitened_view`: the same FAISS index, searched with vectors that are already
  in its whitened, normalised space (``transform`` only L2-normalises), so a vector
  built there (an expanded query, a DBA vector) is searched as it is.
* :func:`store_vectors`: rows of the region table (the store: exact vectors, never the
  compressed codes of an IVF-PQ index) put through the index's transform.
* :func:`evaluated_exclusions`: per query, the images the protocol takes out of the
  list it scores (the query's own image and other query images as the protocol
  removes them, its junk); read from the protocol rules, never from the positives.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from claid.structures import Ranking


def whitened_view(index):
    """A RegionIndex over the same FAISS index whose input is already whitened and
    normalised (dimension ``index.dim``): searching it applies only an L2 norm."""
    from claid.index import RegionIndex

    view = RegionIndex(index.faiss_index, None, {**index.meta, "dim_in": index.dim})
    view.mapped = True  # never added to: the vectors belong to ``index``
    return view


def all_store_vectors(index, table, rows: int = 16384) -> np.ndarray:
    """(N, D') float32: every row of ``table`` in ``index``'s whitened space, read in
    chunks (memory: the result plus one chunk)."""
    out = np.empty((table.n_rows, index.dim), dtype=np.float32)
    for start, chunk in table.vector_chunks(rows):
        out[start : start + chunk.shape[0]] = index.transform(chunk)
    return out


def store_vectors(index, table, rows: np.ndarray) -> np.ndarray:
    """(len(rows), D') float32 vectors of the given rows (any order, repeats allowed)
    in ``index``'s whitened space, gathered from the store."""
    rows = np.asarray(rows, dtype=np.int64)
    unique, inverse = np.unique(rows, return_inverse=True)
    if unique.size == 0:
        return np.zeros((0, index.dim), np.float32)
    return index.transform(table.gather(unique))[inverse]


class RowSource:
    """The database rows a re-ranking reads: each row's image and box, and its
    whitened vector: from the store (``table``) through the index's transform, or
    from an array already in that space (DBA vectors; a flat index's own vectors
    where no store is at hand, as in ``python -m claid search``)."""

    def __init__(self, index, region_image, boxes, image_ids, *, table=None, whitened=None) -> None:
        if (table is None) == (whitened is None):
            raise ValueError("give the table (store) or the whitened vectors")
        self.index, self.table, self.whitened = index, table, whitened
        self.region_image = np.asarray(region_image, dtype=np.int64)
        self.boxes = np.asarray(boxes, dtype=np.float32)
        self.image_ids = list(image_ids)

    @classmethod
    def of_table(cls, index, table) -> RowSource:
        return cls(index, table.region_image, table.boxes, table.image_ids, table=table)

    @property
    def n_rows(self) -> int:
        return int(self.region_image.shape[0])

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), D') float32 whitened vectors of the given rows."""
        if self.whitened is not None:
            return np.asarray(self.whitened[np.asarray(rows, dtype=np.int64)], dtype=np.float32)
        return store_vectors(self.index, self.table, rows)

    def all_vectors(self) -> np.ndarray:
        """(N, D') float32 every row's whitened vector (in memory)."""
        if self.whitened is not None:
            return np.asarray(self.whitened, dtype=np.float32)
        return all_store_vectors(self.index, self.table)


class ImageRows:
    """The rows of each image, grouped: ``rows_of(i)`` lists image ``i``'s rows."""

    def __init__(self, region_image: np.ndarray, n_images: int) -> None:
        region_image = np.asarray(region_image, dtype=np.int64)
        self.order = np.argsort(region_image, kind="stable")
        self.starts = np.searchsorted(region_image[self.order], np.arange(n_images + 1))
        counts = np.diff(self.starts)
        self.max_rows = int(counts.max()) if counts.size else 0

    def rows_of(self, image: int) -> np.ndarray:
        return self.order[self.starts[image] : self.starts[image + 1]]


def evaluated_exclusions(bench, queries: Sequence) -> list[set[str]]:
    """Per query, the images that the protocol's evaluation removes from its ranking
    before scoring (claid.evaluation.protocols.evaluate): every query image when the
    protocol removes queries from the database, the query's own image by the
    ``remove_query_image`` rule, and junk when the protocol drops junk. For the
    revisited protocol the junk is what all three settings drop (the ``junk`` list
    itself: the easy setting's extra junk, the hard images, are positives in medium
    and never used). Built from those rules only, never from the positives (the
    ``auto`` rule reads whether the own image is listed as positive, as the protocol
    does)."""
    from claid.evaluation.protocols import resolve_protocol
    from claid.evaluation.revisited_settings import REVISITED_SETTINGS, revisited_ground_truth

    spec = resolve_protocol(bench.protocol)
    all_query_images = {q.image for q in bench.queries if q.image is not None}
    out = []
    for query in queries:
        if spec.family == "revisited":
            truths = [revisited_ground_truth(query, s) for s in REVISITED_SETTINGS]
            junk = set.intersection(*(j for _, j in truths))
            positives = set().union(*(p for p, _ in truths))
        else:
            junk, positives = set(query.junk), set(query.positives)
        removed = set(all_query_images) if spec.remove_queries_from_db else set()
        if query.image is not None and (
            spec.remove_query_image == "always"
            or (spec.remove_query_image == "auto" and query.image not in positives)
        ):
            removed.add(query.image)
        out.append(removed | (junk if spec.junk else set()))
    return out


def rank_from_region_scores(scores, region_image: np.ndarray, boxes: np.ndarray,
                            image_ids: Sequence[str], qid: str, exclude: np.ndarray,
                            aggregate: str = "max") -> Ranking:
    """One query's image ranking from sparse region scores.

    Args:
        scores: (cols, values): region rows and their scores (> 0 kept).
        exclude: image numbers left out (the query's own image, as the search does).
        aggregate: ``max`` (an image scores its best region, as claid's search) or
            ``sum`` (the sum of its regions' scores); the box is the image's best
            region either way (lowest row among equals).
    """
    cols, values = (np.asarray(a) for a in scores)
    keep = values > 0
    cols, values = cols[keep].astype(np.int64), values[keep].astype(np.float64)
    images = region_image[cols]
    order = np.lexsort((cols, -values, images))  # per image: best region first
    images, cols, values = images[order], cols[order], values[order]
    first = np.flatnonzero(np.r_[True, images[1:] != images[:-1]]) if images.size else np.zeros(0, int)
    if aggregate == "sum":
        score = np.add.reduceat(values, first) if first.size else np.zeros(0)
    else:
        score = values[first]
    best = cols[first]
    image = images[first]
    if len(exclude):
        ok = ~np.isin(image, exclude)
        score, best, image = score[ok], best[ok], image[ok]
    rank = np.lexsort((best, -score))
    ids = np.asarray(image_ids, dtype=object)
    return Ranking(qid=qid, images=ids[image[rank]].tolist(), scores=score[rank].astype(np.float32),
                   boxes=np.asarray(boxes, np.float32)[best[rank]].reshape(-1, 4))


def image_numbers(image_ids: Sequence[str], per_query: Sequence[set[str]]) -> list[np.ndarray]:
    """Image-id sets -> arrays of image numbers (ids not in the database dropped)."""
    where = {image: i for i, image in enumerate(image_ids)}
    return [np.fromiter((where[i] for i in s if i in where), dtype=np.int64) for s in per_query]


def first_valid(ids: np.ndarray, valid: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first ``n`` entries where ``valid``: (ids (R, n) padded with -1,
    mask (R, n))."""
    rank = np.cumsum(valid, axis=1) - 1
    take = valid & (rank < n)
    out = np.full((ids.shape[0], n), -1, dtype=np.int64)
    r, c = np.nonzero(take)
    out[r, rank[r, c]] = ids[r, c]
    return out, out >= 0
