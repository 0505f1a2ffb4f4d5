"""Re-ranked search of an index dir from Python or the command line
(``python -m claid search --index-dir DIR --rerank dba,aqe``).

The DBA index and the diffusion offline part are not built here: they are found in
the cache beside the index dir (``index-dba-<hash>``, ``diffusion-<hash>``, keyed by
the index's own key and the settings; :mod:`claid.rerank.cache`), as a ``run.py``
job with ``rerank=...`` wrote them, and their checksums are verified. Settings are
the defaults of ``conf/rerank/*.yaml`` unless ``--rerank-set dba.n=5`` says otherwise.
No store is at hand here, so the region vectors that alpha-QE and diffusion read
are the index's own (a flat index, or a DBA index, which keeps its vectors).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from claid.rerank import cache
from claid.rerank.common import RowSource
from claid.rerank.methods import rerank
from claid.rerank.settings import ORDER, as_dict, parse_rerank


class RerankUnavailable(ValueError):
    """What a re-ranked search needs is not in the cache (the message says how to make it)."""


def parse_methods(names: str, overrides: Sequence[str] = ()) -> dict:
    """``"dba,aqe"`` and ``["dba.n=5"]`` -> {method: settings} (running order)."""
    chosen = [m.strip() for m in names.split(",") if m.strip() and m.strip() != "none"]
    node: dict = {m: {} for m in chosen}
    for item in overrides:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot or method not in node:
            raise RerankUnavailable(f"--rerank-set {item!r:.80}: expected METHOD.KEY=VALUE for a method in --rerank")
        try:  # plain YAML scalars only: no tags, no objects
            node[method][name] = yaml.safe_load(value)
        except (yaml.YAMLError, ValueError, RecursionError) as err:
            why = str(err).splitlines()[0][:80] if str(err) else type(err).__name__
            raise RerankUnavailable(f"--rerank-set {item!r:.80}: the value is not a YAML number or "
                                    f"word ({why})") from None
    return parse_rerank(node)


class _Finder:
    """``prepare`` for the CLI: the cached parts only."""

    def __init__(self, index_dir: Path, key: dict, methods: Sequence[str] = ()) -> None:
        self.cache_dir, self.key, self.index_dir = index_dir.parent, key, index_dir
        self.methods = [m for m in ORDER if m in methods]  # the combination asked for

    def __call__(self, name, index, rows, settings):
        if name == "dba":
            key = cache.dba_key(self.key, as_dict(settings))
            directory = cache.dba_dir(self.cache_dir, key)
            found = cache.load_dba(directory, key)
            if found is None:
                raise RerankUnavailable(self._missing("DBA index", directory, "dba", settings))
            new_index, vectors = found
            if vectors is None:
                vectors = new_index.database_vectors()
            self.key = key
            new_rows = RowSource(new_index, rows.region_image, rows.boxes, rows.image_ids, whitened=vectors)
            return new_index, new_rows, {"dir": str(directory), "reused": True}
        key = cache.diffusion_key(self.key, as_dict(settings))
        directory = cache.diffusion_dir(self.cache_dir, key)
        offline = cache.load_offline(directory, key, rows.n_rows)
        if offline is None:
            raise RerankUnavailable(self._missing("diffusion offline part", directory, "diffusion", settings))
        return offline, {"dir": str(directory), "reused": True}

    def _missing(self, what, directory, method, settings) -> str:
        combination = self.methods or [method]
        asked = combination[0] if len(combination) == 1 else f"'rerank=[{','.join(combination)}]'"
        asked = asked if asked.startswith("'") else f"rerank={asked}"
        return (f"no cached {what} for {self.index_dir} with rerank.{method} {as_dict(settings)} "
                f"(looked for {directory}); run the run.py job that built the index again with "
                f"{asked} (and the same rerank.{method}.* settings) to build it")


def reranked_search(index_dir: str | Path, query_vectors: np.ndarray, qids: Sequence[str], *,
                    k: int | None, methods: dict):
    """Rankings of ``query_vectors`` in an index dir, re-ranked by ``methods``."""
    from claid.index import RegionIndex, search_images
    from claid.index.search_table import load_search_table

    index_dir = Path(index_dir)
    meta, region_image, boxes = load_search_table(index_dir)
    index = RegionIndex.load(index_dir, mmap=True)
    needs_vectors = any(m in methods for m in ("aqe", "diffusion", "superglobal"))
    if needs_vectors and not index.is_exact and "dba" not in methods:
        raise RerankUnavailable(
            f"{index_dir} is a {index.meta['factory']} index: alpha-QE, diffusion and SuperGlobal from "
            "the command line read the region vectors from a flat index (or a DBA index); re-rank inside the run "
            "(run.py rerank=...), which reads them from the store")
    whitened = index.database_vectors() if index.is_exact else np.zeros((0, index.dim), np.float32)
    rows = RowSource(index, region_image, boxes, meta["image_ids"], whitened=whitened)
    own = [set() for _ in qids]
    rankings = search_images(index, query_vectors, region_image, boxes, meta["image_ids"], list(qids), k=k)
    rankings, _ = rerank(methods, index=index, rows=rows, query_vectors=query_vectors, qids=qids,
                         own=own, exclusions=own, rankings=rankings, k=k, memory_gb=1.0,
                         prepare=_Finder(index_dir, meta["key"], list(methods)))
    return rankings


__all__ = ["ORDER", "RerankUnavailable", "parse_methods", "reranked_search"]
